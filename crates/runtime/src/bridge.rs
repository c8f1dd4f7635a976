//! `sandman-runtime --bridge PORT`: one connection to a port on the sandbox's own loopback,
//! carried over stdin and stdout. The checkpoint supervisor runs it inside the agent's gVisor
//! sandbox (`runsc exec`) for each connection it forwards there, so that a Sandbox whose image
//! has no `nc` can be reached, the runtime's port included.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// How long the port may refuse: a listener that a restore brings back, or one between two
/// accepts, is not there for a moment.
const REFUSED_FOR: Duration = Duration::from_secs(5);
const RETRY_AFTER: Duration = Duration::from_millis(20);

/// Carries one connection to `127.0.0.1:port` until both directions end.
pub fn bridge(port: u16) -> Result<(), String> {
    let stream = connect(port)?;
    let mut to_port = stream
        .try_clone()
        .map_err(|e| format!("bridge to port {port}: {e}"))?;
    let mut from_port = stream;
    // Blocking copies on two threads: a bridge is one short-lived process per connection,
    // so it needs no async runtime.
    let inbound = std::thread::spawn(move || {
        let copied = std::io::copy(&mut std::io::stdin().lock(), &mut to_port);
        // The client is done sending: the port sees the end too, and may still answer.
        let _ = to_port.shutdown(Shutdown::Write);
        copied
    });
    let mut stdout = std::io::stdout().lock();
    let outbound = copy_flushing(&mut from_port, &mut stdout);
    // The port closed: whatever the client still sends has nowhere to go.
    drop(stdout);
    outbound.map_err(|e| format!("bridge from port {port}: {e}"))?;
    if inbound.is_finished() {
        let _ = inbound.join();
    }
    Ok(())
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let started = Instant::now();
    loop {
        match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && started.elapsed() < REFUSED_FOR =>
            {
                std::thread::sleep(RETRY_AFTER);
            }
            Err(e) => return Err(format!("connect to 127.0.0.1:{port}: {e}")),
        }
    }
}

/// Copies until `from` ends, flushing after each read: a reply must reach the client as it
/// comes, not when a buffer fills.
fn copy_flushing(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buffer = vec![0; 64 << 10];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return to.flush(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_port_is_tried_again_until_it_listens() {
        let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
        let port = probe.local_addr().expect("its address").port();
        drop(probe);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let listener =
                std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("listen late");
            let (mut conn, _) = listener.accept().expect("accept");
            conn.write_all(b"hello").expect("write");
        });
        let mut stream = connect(port).expect("connected once it listens");
        let mut got = String::new();
        stream.read_to_string(&mut got).expect("read");
        assert_eq!(got, "hello");
        late.join().expect("the listener");
    }

    #[test]
    fn a_port_nobody_opens_is_an_error() {
        let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
        let port = probe.local_addr().expect("its address").port();
        drop(probe);
        let error = connect(port).expect_err("nobody listens");
        assert!(error.contains(&port.to_string()), "{error}");
    }
}
