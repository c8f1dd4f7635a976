//! How often the gateway may send a request to a pod again after the pod closed the
//! connection without answering. Replays hide a server's first second of life, but each one is
//! a request the pod sees: unbounded, one bodiless GET reached a pod about 14 times in 5 s.
//! So each request has a few, and each Sandbox a budget that all its requests share (a token
//! bucket), so that many clients of one struggling pod do not multiply into a storm.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::activity::Key;

/// The most times one request is sent again.
pub const PER_REQUEST: u32 = 3;
/// Replays a Sandbox may have at once, and how many it earns back each second.
const BURST: f64 = 10.0;
const PER_SECOND: f64 = 2.0;
/// Past this many Sandboxes, buckets that are full again (idle) are forgotten.
const TRACKED: usize = 4096;

#[derive(Default)]
pub struct Replays {
    buckets: Mutex<HashMap<Key, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(&self, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * PER_SECOND;
        (self.tokens + earned).min(BURST)
    }
}

impl Replays {
    /// Takes one replay from the Sandbox's budget; false when it has none left.
    pub fn take(&self, key: &Key) -> bool {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &Key, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if buckets.len() >= TRACKED && !buckets.contains_key(key) {
            buckets.retain(|_, b| b.refilled(now) < BURST);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let tokens = bucket.refilled(now);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            true
        } else {
            bucket.tokens = tokens;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str) -> Key {
        ("ns".into(), name.into())
    }

    #[test]
    fn a_sandbox_has_a_shared_budget_that_refills() {
        let replays = Replays::default();
        let start = Instant::now();
        let taken = (0..100)
            .filter(|_| replays.take_at(&key("a"), start))
            .count();
        assert_eq!(taken, 10, "the burst, no more");
        assert!(
            replays.take_at(&key("b"), start),
            "another Sandbox has its own"
        );
        assert!(!replays.take_at(&key("a"), start));
        assert!(replays.take_at(&key("a"), start + Duration::from_millis(500)));
    }
}
