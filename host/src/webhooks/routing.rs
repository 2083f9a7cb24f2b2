//! Which pull mirrors a delivery reaches, kept in memory: the pull mirrors by
//! normalised remote URL and their projects' sealed webhook secrets. Rebuilt
//! from the database (one read) when the store's routing generation says a
//! mirror, project or secret changed, so a delivery costs no database access
//! until it is a new one to record. Secrets stay sealed here.
//!
//! Also remembers delivery ids known to be recorded, so a replay is answered
//! without the database; the table stays the source of truth (the memory is
//! bounded and forgets everything when full).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::store::Db;

use crate::store::{self, Direction, Mirror, Store, StoreError};
use crate::sync::remote;

/// Delivery ids remembered before the memory starts over.
const SEEN_CAPACITY: usize = 100_000;

/// Each project with pull mirrors whose remote is one of a delivery's URLs:
/// those mirrors and the project's sealed webhook secret.
pub type Candidates = BTreeMap<String, (Vec<Arc<Mirror>>, Option<Arc<[u8]>>)>;

#[derive(Debug)]
struct Routing {
    generation: u64,
    by_url: HashMap<String, Vec<Arc<Mirror>>>,
    secrets: HashMap<String, Arc<[u8]>>,
}

#[derive(Debug, Default)]
pub struct RoutingCache {
    current: RwLock<Option<Arc<Routing>>>,
    seen: Mutex<HashSet<String>>,
}

impl RoutingCache {
    /// The candidates for a delivery naming `urls`.
    pub fn candidates(&self, store: &Store, urls: &[String]) -> Result<Candidates, StoreError> {
        let routing = self.routing(store)?;
        let mut wanted: Vec<String> = urls.iter().filter_map(|u| remote::normalize(u)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = Candidates::new();
        for mirror in wanted
            .iter()
            .filter_map(|u| routing.by_url.get(u))
            .flatten()
        {
            let (mirrors, secret) = found.entry(mirror.project_id.clone()).or_default();
            if mirrors.iter().all(|m| m.mirror_id != mirror.mirror_id) {
                mirrors.push(mirror.clone());
            }
            if secret.is_none() {
                *secret = routing.secrets.get(&mirror.project_id).cloned();
            }
        }
        Ok(found)
    }

    fn routing(&self, store: &Store) -> Result<Arc<Routing>, StoreError> {
        // Read the generation before the tables: a write racing the load makes
        // the new routing look stale, never a stale one look fresh.
        let generation = store.routing_generation()?;
        {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(routing) = current.as_ref().filter(|r| r.generation == generation) {
                return Ok(routing.clone());
            }
        }
        let fresh = Arc::new(store.with(|c| Routing::load(c, generation))?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Whether `delivery` from `source` is known to be recorded already.
    pub fn seen(&self, source: &str, delivery: &str) -> bool {
        self.seen_ids().contains(&key(source, delivery))
    }

    /// Notes that `delivery` from `source` is recorded in the database.
    pub fn remember(&self, source: &str, delivery: &str) {
        let mut seen = self.seen_ids();
        if seen.len() >= SEEN_CAPACITY {
            seen.clear();
        }
        seen.insert(key(source, delivery));
    }

    fn seen_ids(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A set of ids holds no invariant a panicking holder could break.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn key(source: &str, delivery: &str) -> String {
    format!("{source}\n{delivery}")
}

impl Routing {
    fn load(conn: &mut Db, generation: u64) -> Result<Self, StoreError> {
        let mut by_url: HashMap<String, Vec<Arc<Mirror>>> = HashMap::new();
        for mirror in store::mirrors::list(conn, None, Some(Direction::Pull))? {
            if let Some(url) = remote::normalize(&mirror.url) {
                by_url.entry(url).or_default().push(Arc::new(mirror));
            }
        }
        let secrets = store::webhooks::all_secrets(conn)?
            .into_iter()
            .map(|(project, sealed)| (project, Arc::from(sealed)))
            .collect();
        Ok(Self {
            generation,
            by_url,
            secrets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MirrorSettings;

    #[test]
    fn every_write_to_mirrors_or_secrets_is_seen_by_the_next_delivery() {
        let store = Store::for_test();
        let cache = RoutingCache::default();
        let urls = vec!["https://GitHub.com/acme/widgets/".to_string()];
        assert!(cache.candidates(&store, &urls).unwrap().is_empty());

        let settings = MirrorSettings::pull(
            "acme/widgets",
            "https://github.com/acme/widgets.git",
            "github.com",
        );
        let first = store
            .with(|c| store::mirrors::insert(c, &settings))
            .unwrap();
        let found = cache.candidates(&store, &urls).unwrap();
        assert_eq!(found["acme/widgets"].0[0].mirror_id, first.mirror_id);
        assert!(found["acme/widgets"].1.is_none());

        store
            .with(|c| store::webhooks::set_secret(c, "acme/widgets", b"sealed", "k1"))
            .unwrap();
        let found = cache.candidates(&store, &urls).unwrap();
        assert_eq!(found["acme/widgets"].1.as_deref(), Some(&b"sealed"[..]));

        store
            .with(|c| store::mirrors::delete(c, first.mirror_id))
            .unwrap();
        assert!(cache.candidates(&store, &urls).unwrap().is_empty());
    }

    #[test]
    fn remembered_deliveries_are_per_source() {
        let cache = RoutingCache::default();
        cache.remember("github", "d-1");
        assert!(cache.seen("github", "d-1"));
        assert!(!cache.seen("gitlab", "d-1"));
    }
}
