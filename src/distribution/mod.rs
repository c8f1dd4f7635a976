//! Where policy components come from besides ConfigMaps: plain URLs and OCI registries. Every
//! source is pinned by the policy's sha256; this layer only fetches (and, for the CLI, pushes).

pub mod auth;
pub mod oci;
pub mod signature;

use sha2::{Digest, Sha256};

/// What can go wrong fetching or pushing: the HTTP client's errors.
pub use crate::http_client::FetchError;

/// Whether `authority` (`host[:port]`) names this machine: such registries speak plain HTTP, and
/// only they (or TLS) may be sent credentials.
pub fn is_loopback(authority: &str) -> bool {
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(authority, |(host, _)| host);
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_authorities_with_and_without_ports() {
        for here in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(super::is_loopback(here), "{here}");
        }
        for elsewhere in ["ghcr.io", "registry.example:5000", "10.0.0.1:5000"] {
            assert!(!super::is_loopback(elsewhere), "{elsewhere}");
        }
    }
}
