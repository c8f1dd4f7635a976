//! Accepting connections for sandman's servers (the gateway, `/metrics`): a bounded number at
//! once, and an accept error (out of file descriptors, say) waits and tries again rather than
//! spinning a core or stopping the server for good.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first wait after an accept error; it doubles up to [`MAX_ACCEPT_BACKOFF`].
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A listener that hands out at most `max` connections at once.
pub struct Bounded {
    listener: TcpListener,
    slots: Arc<Semaphore>,
}

/// An accepted connection; its slot is free again when this is dropped.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: std::net::SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

impl Bounded {
    pub fn new(listener: TcpListener, max: usize) -> Self {
        Self::sharing(listener, Arc::new(Semaphore::new(max.max(1))))
    }

    /// A listener whose connections take their slots from `slots`, which other listeners
    /// may share: then the bound is on all of them together.
    pub fn sharing(listener: TcpListener, slots: Arc<Semaphore>) -> Self {
        Self { listener, slots }
    }

    /// The next connection, once a slot is free. Never fails: accept errors are logged and
    /// retried after a growing pause.
    pub async fn accept(&self) -> Accepted {
        let slot = loop {
            // The semaphore is never closed, so this only waits.
            if let Ok(slot) = self.slots.clone().acquire_owned().await {
                break slot;
            }
        };
        let mut backoff = ACCEPT_BACKOFF;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    // Streamed answers go out in small frames; with Nagle's algorithm each
                    // waits for the client's delayed ACK (40 ms on Linux).
                    let _ = stream.set_nodelay(true);
                    return Accepted { stream, peer, slot };
                }
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "accept failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}
