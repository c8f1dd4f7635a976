//! One forwarded connection carried both ways between a pod port and the agent inside its
//! sandbox. Each holds a `runsc exec` for as long as it lasts, so it is closed when no byte
//! has gone either way for the idle time, and at the end of its life whatever it does.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a carried connection ended, when it did not end by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Cut {
    #[error("no byte either way for {0:?}")]
    Idle(Duration),
    #[error("open for its whole life ({0:?})")]
    Life(Duration),
}

/// When the connection last carried a byte, as milliseconds since it began.
struct LastByte {
    began: Instant,
    at_ms: AtomicU64,
}

impl LastByte {
    fn touch(&self) {
        let ms = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.began + Duration::from_millis(self.at_ms.load(Ordering::Relaxed))
    }
}

/// A stream whose reads mark the connection as in use.
struct Watched<S> {
    inner: S,
    last: Arc<LastByte>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies `outside` to `inside` and back until either ends, or until it has been idle for
/// `idle`, or open for `life`. `Ok(Err(cut))` says which limit ended it.
pub async fn carry<A, B>(
    outside: A,
    inside: B,
    idle: Duration,
    life: Duration,
) -> io::Result<Result<(), Cut>>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = Arc::new(LastByte {
        began: Instant::now(),
        at_ms: AtomicU64::new(0),
    });
    let mut outside = Watched {
        inner: outside,
        last: last.clone(),
    };
    let mut inside = Watched {
        inner: inside,
        last: last.clone(),
    };
    let idled = async {
        loop {
            let quiet_until = last.at() + idle;
            if Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut outside, &mut inside) => copied.map(|_| Ok(())),
        () = idled => Ok(Err(Cut::Idle(idle))),
        () = tokio::time::sleep(life) => Ok(Err(Cut::Life(life))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    const IDLE: Duration = Duration::from_secs(60);
    const LIFE: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_cut_and_a_busy_one_is_not() {
        let (outside, mut client) = duplex(1024);
        let (inside, mut agent) = duplex(1024);
        let carried = tokio::spawn(carry(outside, inside, IDLE, LIFE));
        // Busy for five idle times: a byte every half idle time, each carried through.
        for _ in 0..10 {
            tokio::time::sleep(IDLE / 2).await;
            client.write_all(b"x").await.expect("write");
            let mut byte = [0u8; 1];
            agent.read_exact(&mut byte).await.expect("carried");
        }
        assert!(!carried.is_finished(), "a busy connection stays");
        // Then quiet.
        let ended = carried.await.expect("joined").expect("no I/O error");
        assert_eq!(ended, Err(Cut::Idle(IDLE)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_ends_at_the_end_of_its_life() {
        let (outside, mut client) = duplex(1024);
        let (inside, mut agent) = duplex(1024);
        let carried = tokio::spawn(carry(outside, inside, IDLE, IDLE * 3));
        let chatter = tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE / 4).await;
                if client.write_all(b"x").await.is_err() {
                    return;
                }
                let mut byte = [0u8; 1];
                if agent.read_exact(&mut byte).await.is_err() {
                    return;
                }
            }
        });
        let ended = carried.await.expect("joined").expect("no I/O error");
        assert_eq!(ended, Err(Cut::Life(IDLE * 3)));
        chatter.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_closes_ends_by_itself() {
        let (outside, client) = duplex(1024);
        let (inside, agent) = duplex(1024);
        let carried = tokio::spawn(carry(outside, inside, IDLE, LIFE));
        drop(client);
        drop(agent);
        assert_eq!(
            carried.await.expect("joined").expect("no I/O error"),
            Ok(())
        );
    }
}
