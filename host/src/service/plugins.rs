//! Uploaded plugins: checked against the world they claim, kept in the data
//! dir; built-ins and plugins in use stay.

use super::{App, ServiceError};
use crate::plugins::{PluginMeta, World, uploaded};
use crate::store;

impl App {
    /// Loads `component` as the plugin `name` of `world` and keeps it for the
    /// next start.
    pub fn upload_plugin(
        &self,
        name: &str,
        world: World,
        component: &[u8],
    ) -> Result<PluginMeta, ServiceError> {
        if !uploaded::valid_name(name) {
            return Err(ServiceError::invalid(
                "name",
                "1 to 64 characters: lower-case letters, digits and '-', not starting with '-'",
            ));
        }
        match self.plugins.get(name) {
            Some(p) if p.builtin => {
                return Err(ServiceError::Conflict(format!(
                    "{name:?} is a built-in plugin"
                )));
            }
            Some(p) if p.world != world => {
                return Err(ServiceError::Conflict(format!(
                    "{name:?} is a {} plugin; delete it before uploading a {world} under that name",
                    p.world
                )));
            }
            _ => {}
        }
        let meta = self
            .plugins
            .load(name, world, component)
            .map_err(|e| ServiceError::invalid("component", e.to_string()))?;
        uploaded::store(&self.config.plugins_dir(), name, world, component)
            .map_err(ServiceError::internal)?;
        tracing::info!(plugin = %meta.name, world = %meta.world, sha256 = %meta.sha256, "plugin uploaded");
        Ok(meta)
    }

    /// Removes an uploaded plugin no mirror uses.
    pub fn delete_plugin(&self, name: &str) -> Result<(), ServiceError> {
        let meta = self
            .plugins
            .get(name)
            .ok_or_else(|| ServiceError::NotFound(format!("no plugin {name:?}")))?;
        if meta.builtin {
            return Err(ServiceError::Conflict(format!(
                "{name:?} is a built-in plugin"
            )));
        }
        let users: Vec<i64> = self
            .store
            .with(|c| store::mirrors::list(c, None, None))?
            .into_iter()
            .filter(|m| m.uses_plugin(name))
            .map(|m| m.mirror_id)
            .collect();
        if !users.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "{name:?} is used by mirrors {users:?}"
            )));
        }
        uploaded::remove(&self.config.plugins_dir(), name).map_err(ServiceError::internal)?;
        self.plugins.remove(name);
        Ok(())
    }
}
