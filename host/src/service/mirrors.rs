//! Mirrors and projects: settings validated in full (URL policy, plugins and
//! their configs) before anything is stored.

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{App, ServiceError};
use crate::plugins::World;
use crate::store::schedules::Cadence;
use crate::store::{self, AuthMethod, Direction, LfsMissing, Mirror, MirrorSettings, Project};
use crate::sync::remote;

/// A new mirror, as `POST /api/v1/mirrors/{pull,push}` takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMirror {
    /// `group/project`, nested groups allowed (see `check_project_id`).
    #[schema(
        pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$",
        max_length = 255
    )]
    pub project_id: String,
    pub url: String,
    #[serde(default = "auth_none")]
    pub auth_method: AuthMethod,
    pub update_interval: Option<i64>,
    #[serde(default)]
    pub only_protected_branches: bool,
    #[serde(default)]
    pub keep_divergent_refs: bool,
    pub mirror_branch_regex: Option<String>,
    pub conflict_strategy: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub conflict_strategy_config: Option<Value>,
    pub branch_filter: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub branch_filter_config: Option<Value>,
    /// An auth-provider plugin in place of the built-in one of `auth_method`.
    pub auth_provider: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub auth_provider_config: Option<Value>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `http(s)://[user:password@]host:port` of the HTTP proxy this mirror's
    /// transfers go through (the credentials are stored sealed and never
    /// shown); `""` for none; absent for the service's (`https_proxy`).
    pub proxy_url: Option<String>,
    /// PEM certificates of authorities the https remote may be signed by,
    /// beside the service's (include intermediates: the check sees only the
    /// remote's own certificate).
    #[schema(max_length = 65536)]
    pub tls_ca_pem: Option<String>,
    /// The client certificate to present to a remote that demands one (PEM,
    /// leaf first, then intermediates); given together with its key.
    #[schema(max_length = 65536)]
    pub tls_client_cert_pem: Option<String>,
    /// The unencrypted PEM private key of `tls_client_cert_pem`; stored
    /// sealed, never shown (the mirror says `tls_client_key: true`).
    #[schema(max_length = 16384)]
    pub tls_client_key_pem: Option<String>,
    /// Whether runs move the Git LFS objects of the commits they move
    /// (default true).
    #[serde(default = "yes")]
    pub lfs: bool,
    /// What a run does with an LFS object it cannot move: `fail` (default;
    /// the run fails naming it, no ref changes) or `skip` (recorded in the
    /// run, left out).
    #[serde(default = "lfs_fail")]
    pub lfs_missing: LfsMissing,
}

/// A change of a mirror's settings, as `PATCH /api/v1/mirrors/{id}` takes it:
/// every field optional; `null` clears the optional ones.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMirror {
    pub url: Option<String>,
    pub auth_method: Option<AuthMethod>,
    #[serde(default, deserialize_with = "present")]
    pub update_interval: Option<Option<i64>>,
    pub only_protected_branches: Option<bool>,
    pub keep_divergent_refs: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub mirror_branch_regex: Option<Option<String>>,
    pub conflict_strategy: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub conflict_strategy_config: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub branch_filter: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub branch_filter_config: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub auth_provider: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub auth_provider_config: Option<Value>,
    pub enabled: Option<bool>,
    /// As at creation; `null` goes back to the service's proxy.
    #[serde(default, deserialize_with = "present")]
    pub proxy_url: Option<Option<String>>,
    /// As at creation; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(max_length = 65536)]
    pub tls_ca_pem: Option<Option<String>>,
    /// As at creation, with `tls_client_key_pem` beside it; `null` removes
    /// both.
    #[serde(default, deserialize_with = "present")]
    #[schema(max_length = 65536)]
    pub tls_client_cert_pem: Option<Option<String>>,
    #[schema(max_length = 16384)]
    pub tls_client_key_pem: Option<String>,
    pub lfs: Option<bool>,
    pub lfs_missing: Option<LfsMissing>,
}

/// The largest `tls_client_key_pem` taken (an RSA 8192 key is under 7 KiB).
const MAX_CLIENT_KEY_BYTES: usize = 16 * 1024;

fn auth_none() -> AuthMethod {
    AuthMethod::None
}

fn yes() -> bool {
    true
}

fn lfs_fail() -> LfsMissing {
    LfsMissing::Fail
}

/// Distinguishes a field set to `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl App {
    pub fn create_mirror(
        &self,
        direction: Direction,
        new: CreateMirror,
    ) -> Result<Mirror, ServiceError> {
        let mut settings = MirrorSettings {
            project_id: new.project_id,
            direction,
            url: new.url,
            remote_host: String::new(),
            auth_method: new.auth_method,
            enabled: new.enabled,
            update_interval: self.checked_update_interval(new.update_interval, direction)?,
            only_protected_branches: new.only_protected_branches,
            keep_divergent_refs: new.keep_divergent_refs,
            mirror_branch_regex: new.mirror_branch_regex,
            conflict_strategy: new.conflict_strategy.unwrap_or_else(|| "theirs".into()),
            conflict_strategy_config: config_text(new.conflict_strategy_config),
            branch_filter: new.branch_filter,
            branch_filter_config: config_text(new.branch_filter_config),
            auth_provider: new.auth_provider,
            auth_provider_config: config_text(new.auth_provider_config),
            proxy_url: new.proxy_url,
            proxy_secret: None,
            tls_ca_pem: new.tls_ca_pem,
            tls_client_cert_pem: None,
            tls_client_key_secret: None,
            lfs: new.lfs,
            lfs_missing: new.lfs_missing,
        };
        self.set_client_certificate(
            &mut settings,
            new.tls_client_cert_pem.map(Some),
            new.tls_client_key_pem,
        )?;
        let settings = self.validate(settings)?;
        let mirror = self.store.with(|c| {
            if settings.direction == Direction::Pull {
                let pulls =
                    store::mirrors::list(c, Some(&settings.project_id), Some(Direction::Pull))?;
                if let Some(other) = pulls.first() {
                    return Err(ServiceError::Conflict(format!(
                        "project {} already has pull mirror {}: a project mirrors one upstream",
                        settings.project_id, other.mirror_id
                    )));
                }
            }
            Ok(store::mirrors::insert(c, &settings)?)
        })?;
        if let Some(seconds) = mirror.update_interval {
            self.set_cadence(
                mirror.mirror_id,
                &Cadence::Interval(seconds),
                mirror.enabled,
            )?;
        }
        tracing::info!(mirror_id = mirror.mirror_id, project_id = %mirror.project_id, "mirror created");
        Ok(mirror)
    }

    pub fn patch_mirror(&self, id: i64, patch: PatchMirror) -> Result<Mirror, ServiceError> {
        let current = self.mirror(id)?;
        let mut s = current.settings();
        if let Some(url) = patch.url {
            s.url = url;
        }
        s.auth_method = patch.auth_method.unwrap_or(s.auth_method);
        let new_interval = patch.update_interval.is_some();
        if let Some(interval) = patch.update_interval {
            s.update_interval = self.checked_update_interval(interval, s.direction)?;
        }
        s.only_protected_branches = patch
            .only_protected_branches
            .unwrap_or(s.only_protected_branches);
        s.keep_divergent_refs = patch.keep_divergent_refs.unwrap_or(s.keep_divergent_refs);
        s.mirror_branch_regex = patch.mirror_branch_regex.unwrap_or(s.mirror_branch_regex);
        s.conflict_strategy = patch.conflict_strategy.unwrap_or(s.conflict_strategy);
        if let Some(config) = patch.conflict_strategy_config {
            s.conflict_strategy_config = config_text(Some(config));
        }
        s.branch_filter = patch.branch_filter.unwrap_or(s.branch_filter);
        if let Some(config) = patch.branch_filter_config {
            s.branch_filter_config = config_text(Some(config));
        }
        s.auth_provider = patch.auth_provider.unwrap_or(s.auth_provider);
        if let Some(config) = patch.auth_provider_config {
            s.auth_provider_config = config_text(Some(config));
        }
        s.enabled = patch.enabled.unwrap_or(s.enabled);
        s.lfs = patch.lfs.unwrap_or(s.lfs);
        s.lfs_missing = patch.lfs_missing.unwrap_or(s.lfs_missing);
        if let Some(proxy) = patch.proxy_url {
            // A new proxy drops the old one's credentials; its own URL may carry new ones.
            s.proxy_url = proxy;
            s.proxy_secret = None;
        }
        s.tls_ca_pem = patch.tls_ca_pem.unwrap_or(s.tls_ca_pem);
        self.set_client_certificate(&mut s, patch.tls_client_cert_pem, patch.tls_client_key_pem)?;
        let s = self.validate(s)?;
        let mirror = self.store.with(|c| store::mirrors::update(c, id, &s))?;
        // Only a PATCH that names `update_interval` sets the cadence (a cron
        // schedule stays otherwise); any settings change gives a hard-failed
        // mirror its schedule back.
        match mirror.update_interval {
            Some(seconds) if new_interval => {
                self.set_cadence(id, &Cadence::Interval(seconds), mirror.enabled)?;
            }
            _ => self.revive(id)?,
        }
        self.observe_health(id)?;
        Ok(mirror)
    }

    pub fn delete_mirror(&self, id: i64) -> Result<(), ServiceError> {
        self.mirror(id)?;
        Ok(self.store.with(|c| store::mirrors::delete(c, id))?)
    }

    pub fn set_protected_branches(
        &self,
        project_id: &str,
        patterns: &[String],
    ) -> Result<Project, ServiceError> {
        check_project_id(project_id)?;
        for (i, pattern) in patterns.iter().enumerate() {
            if pattern.trim().is_empty()
                || pattern.len() > 255
                || pattern.chars().any(char::is_control)
            {
                return Err(ServiceError::invalid(
                    format!("[{i}]"),
                    "a branch name or wildcard pattern",
                ));
            }
        }
        Ok(self
            .store
            .with(|c| store::mirrors::set_protected_branches(c, project_id, patterns))?)
    }

    /// The mirror `id`, or `NotFound` naming it.
    pub fn mirror(&self, id: i64) -> Result<Mirror, ServiceError> {
        self.store
            .with(|c| store::mirrors::get(c, id))?
            .ok_or_else(|| ServiceError::NotFound(format!("no mirror {id}")))
    }

    /// The mirror and its project, for the operations that run the engine.
    pub fn mirror_with_project(&self, id: i64) -> Result<(Mirror, Project), ServiceError> {
        let mirror = self.mirror(id)?;
        let project = self
            .store
            .with(|c| store::mirrors::project(c, &mirror.project_id))?
            .ok_or_else(|| ServiceError::NotFound(format!("no project {}", mirror.project_id)))?;
        Ok((mirror, project))
    }

    /// Puts a client certificate and its sealed key into `s`, after checking
    /// that they belong together; `Some(None)` removes them; `None` keeps
    /// what `s` has. Neither half goes without the other.
    fn set_client_certificate(
        &self,
        s: &mut MirrorSettings,
        certificate: Option<Option<String>>,
        key: Option<String>,
    ) -> Result<(), ServiceError> {
        use crate::sync::tls_stream::{Identity, IdentityError};
        let (certificate, key) = match (certificate, key) {
            (None, None) => return Ok(()),
            (Some(None), None) => {
                s.tls_client_cert_pem = None;
                s.tls_client_key_secret = None;
                return Ok(());
            }
            (Some(Some(certificate)), Some(key)) => (certificate, key),
            (Some(None), Some(_)) | (None, Some(_)) => {
                return Err(ServiceError::invalid(
                    "tls_client_cert_pem",
                    "send the certificate with its key",
                ));
            }
            (Some(Some(_)), None) => {
                return Err(ServiceError::invalid(
                    "tls_client_key_pem",
                    "send the key with its certificate",
                ));
            }
        };
        if certificate.len() > crate::sync::tls::MAX_CA_PEM_BYTES {
            let why = format!("at most {} bytes", crate::sync::tls::MAX_CA_PEM_BYTES);
            return Err(ServiceError::invalid("tls_client_cert_pem", why));
        }
        if key.len() > MAX_CLIENT_KEY_BYTES {
            let why = format!("at most {MAX_CLIENT_KEY_BYTES} bytes");
            return Err(ServiceError::invalid("tls_client_key_pem", why));
        }
        Identity::from_pem(&certificate, key.as_bytes()).map_err(|e| match e {
            IdentityError::Certificate(why) => ServiceError::invalid("tls_client_cert_pem", why),
            IdentityError::Key(why) => ServiceError::invalid("tls_client_key_pem", why),
        })?;
        let aad = crate::secrets::client_key_aad(&certificate);
        let sealed = self
            .master_key
            .seal_bytes(&aad, key.as_bytes())
            .map_err(ServiceError::internal)?;
        s.tls_client_cert_pem = Some(certificate);
        s.tls_client_key_secret = Some(sealed);
        Ok(())
    }

    /// Checks every setting; returns them with the derived remote host filled in.
    fn validate(&self, mut s: MirrorSettings) -> Result<MirrorSettings, ServiceError> {
        check_project_id(&s.project_id)?;
        let url = remote::parse(&s.url, self.config.remote_policy())
            .map_err(|e| ServiceError::invalid("url", e.to_string()))?;
        s.url = url.url;
        s.remote_host = url.host;
        // A credential already sealed stays (create starts without one, and
        // a PATCH naming a proxy drops it); one in the URL is sealed now.
        if let Some(proxy) = s.proxy_url.take() {
            let (bare, login) = split_proxy_url(&proxy)?;
            if let Some(login) = login {
                let aad = crate::secrets::proxy_aad(&bare);
                let sealed = self
                    .master_key
                    .seal_bytes(&aad, login.as_bytes())
                    .map_err(ServiceError::internal)?;
                s.proxy_secret = Some(sealed);
            }
            s.proxy_url = Some(bare);
        }
        if let Some(pem) = &s.tls_ca_pem {
            crate::sync::tls::check_ca_pem(pem)
                .map_err(|why| ServiceError::invalid("tls_ca_pem", why))?;
        }
        if s.direction == Direction::Pull && s.keep_divergent_refs {
            return Err(ServiceError::invalid(
                "keep_divergent_refs",
                "applies to push mirrors; pull mirrors use conflict_strategy",
            ));
        }
        if let Some(regex) = &s.mirror_branch_regex {
            let config = json!({ "include": regex }).to_string();
            self.check_plugin(
                "mirror_branch_regex",
                "regex-filter",
                World::BranchFilter,
                &config,
            )?;
        }
        self.check_plugin(
            "conflict_strategy",
            &s.conflict_strategy,
            World::ConflictStrategy,
            &s.conflict_strategy_config,
        )?;
        if let Some(filter) = &s.branch_filter {
            self.check_plugin(
                "branch_filter",
                filter,
                World::BranchFilter,
                &s.branch_filter_config,
            )?;
        }
        if let Some(provider) = &s.auth_provider {
            if s.auth_method == AuthMethod::None {
                return Err(ServiceError::invalid(
                    "auth_provider",
                    "a provider answers with the mirror's stored credential: set auth_method too",
                ));
            }
            self.check_plugin(
                "auth_provider",
                provider,
                World::AuthProvider,
                &s.auth_provider_config,
            )?;
        }
        Ok(s)
    }

    /// The plugin exists, is of `world`, and accepts `config`.
    fn check_plugin(
        &self,
        field: &str,
        name: &str,
        world: World,
        config: &str,
    ) -> Result<(), ServiceError> {
        use crate::plugins::PluginErrorKind as Kind;
        self.plugins
            .validate_config(name, world, config)
            .map_err(|e| match e.kind {
                Kind::NotFound => ServiceError::invalid(field, format!("no plugin named {name:?}")),
                Kind::WrongWorld { actual, .. } => ServiceError::invalid(
                    field,
                    format!("{name:?} is a {actual} plugin, not a {world}"),
                ),
                Kind::Rejected(message) => {
                    ServiceError::invalid(format!("{field}_config"), message)
                }
                _ => ServiceError::invalid(field, e.to_string()),
            })
    }

    fn checked_update_interval(
        &self,
        interval: Option<i64>,
        direction: Direction,
    ) -> Result<Option<u32>, ServiceError> {
        let Some(seconds) = interval else {
            return Ok(None);
        };
        if direction == Direction::Push {
            return Err(ServiceError::invalid(
                "update_interval",
                "push mirrors follow their project's pulls and have no interval",
            ));
        }
        self.checked_interval(seconds, "update_interval").map(Some)
    }
}

/// A plugin config is given as JSON (an object, usually) and handed to the plugin
/// as text; a JSON string is taken as the text itself.
fn config_text(config: Option<Value>) -> String {
    match config {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
    }
}

/// `group/project`, nested groups allowed: segments of letters, digits, `.`, `_`,
/// `-`, not starting with `.` or `-`. Keeps repository paths inside the data dir.
/// A mirror's proxy: `""`, or an http(s) URL of a host and port, perhaps
/// with `user:password@`. The URL without them, and them.
fn split_proxy_url(proxy: &str) -> Result<(String, Option<String>), ServiceError> {
    if proxy.is_empty() {
        return Ok((String::new(), None));
    }
    let invalid = |why: &str| ServiceError::invalid("proxy_url", why.to_string());
    let mut url = crate::sync::proxy::parse_url(proxy).map_err(invalid)?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("only scheme, credentials, host and port"));
    }
    let login = match (url.username(), url.password()) {
        ("", None) => None,
        (user, Some(password)) => Some(format!("{user}:{password}")),
        (_, None) => return Err(invalid("credentials need user:password")),
    };
    // Infallible for an http(s) URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let bare = url.as_str().trim_end_matches('/').to_string();
    Ok((bare, login))
}

pub fn check_project_id(id: &str) -> Result<(), ServiceError> {
    let valid_segment = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if id.len() <= 255 && id.contains('/') && id.split('/').all(valid_segment) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "project_id",
            "expected group/project: letters, digits, '.', '_', '-', segments separated by '/'",
        ))
    }
}
