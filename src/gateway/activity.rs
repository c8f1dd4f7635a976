//! Activity the gateway saw, written in batches: at most one write per Sandbox per interval,
//! however many requests it served. Open connections (a WebSocket, a long stream) count as
//! activity for as long as they last.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use crate::activity::{LAST_ACTIVITY, OPEN_CONNECTIONS};
use crate::api::Sandbox;

/// `(namespace, name)`.
pub type Key = (String, String);

#[derive(Default)]
pub struct ActivityLog {
    /// Sandboxes with activity since the last flush.
    touched: Mutex<HashMap<Key, ()>>,
    /// Connections open now, per Sandbox.
    open: Mutex<HashMap<Key, usize>>,
    /// The open-connection count last written, per Sandbox.
    reported: Mutex<HashMap<Key, usize>>,
    writes: AtomicU64,
    /// Flushes that had something to write.
    flushes: AtomicU64,
    /// A Sandbox got its first open connection: written now rather than at the next tick, or
    /// an idle timeout shorter than the interval would suspend it under a running command.
    first_opened: tokio::sync::Notify,
}

/// However often Sandboxes get their first connection, flushes come at most this often.
const MIN_FLUSH_GAP: Duration = Duration::from_secs(1);

impl ActivityLog {
    pub fn touch(&self, key: &Key) {
        if let Ok(mut touched) = self.touched.lock() {
            touched.insert(key.clone(), ());
        }
    }

    /// A connection opened; it stays active until the returned guard drops.
    pub fn open(self: &std::sync::Arc<Self>, key: &Key) -> OpenConnection {
        let first = match self.open.lock() {
            Ok(mut open) => {
                let count = open.entry(key.clone()).or_default();
                *count += 1;
                *count == 1
            }
            Err(_) => false,
        };
        self.touch(key);
        if first {
            self.first_opened.notify_one();
        }
        OpenConnection {
            log: self.clone(),
            key: key.clone(),
        }
    }

    /// Connections open now to the Sandbox `key`.
    pub fn open_now(&self, key: &Key) -> usize {
        self.open
            .lock()
            .map(|o| o.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Flushes so far that wrote anything: each writes a Sandbox at most once.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// API writes made so far (counted when the API server accepted them).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Writes the activity of the last interval, one patch per Sandbox.
    async fn flush(&self, client: &Client) {
        let mut due: Vec<Key> = self
            .touched
            .lock()
            .map(|mut t| t.drain().map(|(k, _)| k).collect())
            .unwrap_or_default();
        if let Ok(open) = self.open.lock() {
            let still_open: Vec<Key> = open
                .iter()
                .filter(|(k, n)| **n > 0 && !due.contains(k))
                .map(|(k, _)| k.clone())
                .collect();
            due.extend(still_open);
        }
        if !due.is_empty() {
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        let now = Timestamp::now().to_string();
        let params = PatchParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let open = self.open.lock().map(|o| o.clone()).unwrap_or_default();
        for key in due {
            let count = open.get(&key).copied().unwrap_or(0);
            let changed = self
                .reported
                .lock()
                .map(|mut r| r.insert(key.clone(), count) != Some(count))
                .unwrap_or(true);
            let mut annotations = serde_json::json!({ LAST_ACTIVITY: now });
            if changed {
                annotations[OPEN_CONNECTIONS] = serde_json::json!(count.to_string());
            }
            let (namespace, name) = key;
            let api: Api<Sandbox> = Api::namespaced(client.clone(), &namespace);
            let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
            // Counted once the API server has it: a reader of the count may read the Sandbox.
            match api.patch(&name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.writes.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(namespace, name, %error, "could not record activity");
                }
            }
        }
    }

    /// Flushes every `interval` until the task is dropped.
    pub async fn run(self: std::sync::Arc<Self>, client: Client, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.first_opened.notified() => {}
            }
            self.flush(&client).await;
            tokio::time::sleep(MIN_FLUSH_GAP.min(interval)).await;
        }
    }
}

pub struct OpenConnection {
    log: std::sync::Arc<ActivityLog>,
    key: Key,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Ok(mut open) = self.log.open.lock()
            && let Some(n) = open.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
        self.log.touch(&self.key);
    }
}
