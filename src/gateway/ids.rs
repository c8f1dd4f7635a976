//! Sandboxes by their E2B id ([`crate::api::sandbox_id`]), as the gateway's watch sees them.
//! A deleted Sandbox's id goes with it, and a relist keeps only the ids it lists, so a
//! gateway that sees Sandboxes come and go for months holds only the ones that exist.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::activity::Key;
use crate::api::Sandbox;

#[derive(Default)]
pub struct Ids {
    by_id: Mutex<HashMap<String, Key>>,
    /// The ids a relist under way has listed so far.
    relisted: Mutex<Option<HashSet<String>>>,
}

fn id_and_key(sandbox: &Sandbox) -> (String, Key) {
    let key = (sandbox.namespace().unwrap_or_default(), sandbox.name_any());
    (crate::api::sandbox_id(&key.0, &key.1), key)
}

impl Ids {
    /// Follows one event of the Sandbox watch.
    pub fn follow(&self, event: &Event<Sandbox>) {
        match event {
            Event::Apply(sandbox) => self.note(sandbox),
            Event::Delete(sandbox) => {
                let (id, _) = id_and_key(sandbox);
                if let Ok(mut by_id) = self.by_id.lock() {
                    by_id.remove(&id);
                }
            }
            Event::Init => {
                if let Ok(mut relisted) = self.relisted.lock() {
                    *relisted = Some(HashSet::new());
                }
            }
            Event::InitApply(sandbox) => {
                self.note(sandbox);
                if let Ok(mut relisted) = self.relisted.lock()
                    && let Some(seen) = relisted.as_mut()
                {
                    seen.insert(id_and_key(sandbox).0);
                }
            }
            Event::InitDone => {
                let seen = self.relisted.lock().ok().and_then(|mut r| r.take());
                if let (Some(seen), Ok(mut by_id)) = (seen, self.by_id.lock()) {
                    by_id.retain(|id, _| seen.contains(id));
                }
            }
        }
    }

    fn note(&self, sandbox: &Sandbox) {
        let (id, key) = id_and_key(sandbox);
        if let Ok(mut by_id) = self.by_id.lock() {
            by_id.entry(id).or_insert(key);
        }
    }

    pub fn get(&self, id: &str) -> Option<Key> {
        self.by_id.lock().ok()?.get(id).cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.lock().map_or(0, |by_id| by_id.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(namespace: &str, name: &str) -> Sandbox {
        let mut sandbox = Sandbox::new(name, Default::default());
        sandbox.metadata.namespace = Some(namespace.into());
        sandbox
    }

    fn id(namespace: &str, name: &str) -> String {
        crate::api::sandbox_id(namespace, name)
    }

    #[test]
    fn a_deleted_sandbox_takes_its_id_with_it() {
        let ids = Ids::default();
        ids.follow(&Event::Apply(sandbox("team", "a")));
        ids.follow(&Event::Apply(sandbox("team", "b")));
        assert_eq!(ids.get(&id("team", "a")), Some(("team".into(), "a".into())));
        ids.follow(&Event::Delete(sandbox("team", "a")));
        assert_eq!(ids.get(&id("team", "a")), None);
        assert!(ids.get(&id("team", "b")).is_some());
        assert_eq!(ids.len(), 1);
    }

    #[test]
    fn a_relist_keeps_only_the_sandboxes_it_lists() {
        let ids = Ids::default();
        for name in ["a", "b", "c"] {
            ids.follow(&Event::Apply(sandbox("team", name)));
        }
        // The watch was down while `a` and `c` went; the relist lists `b` and a new `d`.
        ids.follow(&Event::Init);
        ids.follow(&Event::InitApply(sandbox("team", "b")));
        ids.follow(&Event::InitApply(sandbox("team", "d")));
        // Until the relist is done, the ids from before still route.
        assert!(ids.get(&id("team", "a")).is_some());
        ids.follow(&Event::InitDone);
        assert_eq!(ids.get(&id("team", "a")), None);
        assert_eq!(ids.get(&id("team", "c")), None);
        assert!(ids.get(&id("team", "b")).is_some());
        assert!(ids.get(&id("team", "d")).is_some());
        assert_eq!(ids.len(), 2);
    }
}
