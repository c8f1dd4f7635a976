//! Loopback ports for the servers tests start.

use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;

use crate::Error;

/// Where listening ports are looked for when the kernel's ephemeral range cannot be read.
const FALLBACK_EPHEMERAL_START: u16 = 32768;
/// The lowest port handed out; below it sit well-known and registered services.
const LOWEST: u16 = 10000;

/// A free loopback port for a server to listen on. It is chosen below the kernel's ephemeral
/// range (`net.ipv4.ip_local_port_range`), because a port taken from that range by binding
/// port 0 can be given, between the probe and the server's own bind, to any outgoing
/// connection on the machine (a control plane makes many): that race once stopped a
/// kube-scheduler with "address already in use". Below the range only another listener can
/// take it. The port is still released before the caller binds it, and the control plane
/// fails loudly if another listener wins.
pub fn free_loopback_port() -> Result<u16, Error> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(FALLBACK_EPHEMERAL_START);
    if ephemeral_start > LOWEST + 1000 {
        let span = u64::from(ephemeral_start - LOWEST);
        for _ in 0..200 {
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let port = LOWEST + u16::try_from(random % span).unwrap_or(0);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    // No room below the ephemeral range: let the kernel choose.
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(Error::io("bind 127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("local address of probe socket"))?
        .port();
    Ok(port)
}
