//! Whether a Sandbox's runtime answers yet. A pod is Running, and even accepts connections,
//! before the runtime in it serves (under gVisor the sandbox's network is up first and closes
//! connections for up to about a second). Runtime calls are mostly POSTs with bodies, which the
//! gateway never sends twice, so the first call to a pod address waits for the runtime's
//! `/health` instead; an address that has answered once is remembered and not asked again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, StatusCode};

use super::activity::Key;
use super::proxy::{Upstream, empty};

/// How often a runtime that does not answer yet is asked again: a refused connection costs
/// a pod almost nothing, and a cold create waits on this.
const POLL: Duration = Duration::from_millis(20);
/// The longest one `/health` may take (a restored runtime answers once its restore is done).
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// The most addresses remembered; past it the memory starts over, which costs each Sandbox
/// one more `/health` and never a wrong answer.
const MAX_REMEMBERED: usize = 100_000;

/// The pod address each Sandbox's runtime last answered at.
#[derive(Default)]
pub struct Answered {
    at: Mutex<HashMap<Key, SocketAddr>>,
}

impl Answered {
    /// Whether the runtime of `key` has answered at `addr` (a new pod has a new address, or
    /// the same address for a different process: a pod that was replaced is asked again).
    fn known(&self, key: &Key, addr: SocketAddr) -> bool {
        self.at
            .lock()
            .is_ok_and(|at| at.get(key).is_some_and(|seen| *seen == addr))
    }

    fn remember(&self, key: &Key, addr: SocketAddr) {
        if let Ok(mut at) = self.at.lock() {
            if at.len() >= MAX_REMEMBERED && !at.contains_key(key) {
                at.clear();
            }
            at.insert(key.clone(), addr);
        }
    }

    /// Forgets `key`: its pod was replaced or its runtime stopped answering.
    pub fn forget(&self, key: &Key) {
        if let Ok(mut at) = self.at.lock() {
            at.remove(key);
        }
    }

    /// Waits until the runtime of `key` at `addr` answers `/health`, until `deadline`.
    /// Returns whether it did.
    pub async fn wait(
        &self,
        upstream: &Upstream,
        key: &Key,
        addr: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> bool {
        if self.known(key, addr) {
            return true;
        }
        loop {
            if answers(upstream, addr).await {
                self.remember(key, addr);
                return true;
            }
            if tokio::time::Instant::now() + POLL >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether the runtime at `addr` answers `/health` with 204, as `sandman-runtime` does.
async fn answers(upstream: &Upstream, addr: SocketAddr) -> bool {
    let Ok(request) = Request::get(format!("http://{addr}/health")).body(empty()) else {
        return false;
    };
    let asked = tokio::time::timeout(ASK_TIMEOUT, upstream.request(request)).await;
    matches!(asked, Ok(Ok(response)) if response.status() == StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        ("ns".to_string(), name.to_string())
    }

    #[test]
    fn an_address_is_known_only_for_the_sandbox_that_answered_there() {
        let answered = Answered::default();
        let addr: SocketAddr = ([10, 0, 0, 1], 49983).into();
        answered.remember(&key("a"), addr);
        assert!(answered.known(&key("a"), addr));
        assert!(!answered.known(&key("b"), addr));
        assert!(!answered.known(&key("a"), ([10, 0, 0, 2], 49983).into()));
        answered.forget(&key("a"));
        assert!(!answered.known(&key("a"), addr));
    }

    #[tokio::test]
    async fn a_runtime_that_never_answers_is_waited_for_only_until_the_deadline() {
        // Nothing listens on a port just bound and dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let answered = Answered::default();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        assert!(
            !answered
                .wait(&super::super::proxy::upstream(), &key("a"), addr, deadline)
                .await
        );
        assert!(!answered.known(&key("a"), addr));
    }
}
