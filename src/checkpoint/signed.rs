//! The operator's word to a supervisor, signed with the Sandbox's own token (the Secret
//! `sandman-token-<sandbox>`, mounted only into that Sandbox's pod): HMAC-SHA256 over what is
//! said, so the token itself never crosses the network and a signature is good for one
//! request or one restore only.
//!
//! A control request is signed over its method, path and body; the body names the Sandbox's
//! UID, the pod and the suspension, so a signature made for one of them is worth nothing for
//! another. A restore is signed over the Sandbox's UID, the image and the sha256 the operator
//! recorded for it: a pod template or a claim can set the restore variables, but not sign them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The variable the supervisor reads the Sandbox's token from.
pub const TOKEN_ENV: &str = "SANDMAN_SUPERVISOR_TOKEN";
/// The `Authorization` scheme of a signed control request.
pub const SCHEME: &str = "Sandman-HMAC-SHA256";

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("this supervisor was given no token, so it accepts nothing")]
    NoToken,
    #[error("no `Authorization: {SCHEME}` signature")]
    Missing,
    #[error("the signature is not made with this Sandbox's token")]
    Wrong,
}

fn mac(token: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    Hmac::<Sha256>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
}

fn request_mac(token: &str, method: &str, path: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = mac(token);
    for part in [b"sandman-supervisor-v1", method.as_bytes(), path.as_bytes()] {
        mac.update(part);
        mac.update(b"\n");
    }
    mac.update(body);
    mac
}

fn restore_mac(token: &str, sandbox_uid: &str, image: &str, sha256: &str) -> Hmac<Sha256> {
    let mut mac = mac(token);
    for part in ["sandman-restore-v1", sandbox_uid, image, sha256] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()
}

/// The `Authorization` header value for a control request.
pub fn authorization(token: &str, method: &str, path: &str, body: &[u8]) -> String {
    let tag = request_mac(token, method, path, body)
        .finalize()
        .into_bytes();
    format!("{SCHEME} {}", hex(&tag))
}

/// Whether `header` (the request's `Authorization`) signs this request with `token`. The
/// comparison takes the same time whatever the signature is.
pub fn check_request(
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), Unsigned> {
    if token.is_empty() {
        return Err(Unsigned::NoToken);
    }
    let tag = header
        .and_then(|h| h.strip_prefix(SCHEME))
        .and_then(|h| h.strip_prefix(' '))
        .ok_or(Unsigned::Missing)?;
    let tag = unhex(tag.trim()).ok_or(Unsigned::Wrong)?;
    request_mac(token, method, path, body)
        .verify_slice(&tag)
        .map_err(|_| Unsigned::Wrong)
}

/// The signature of a restore of `image` (whose recorded sha256 is `sha256`) for Sandbox
/// `sandbox_uid`.
pub fn restore_signature(token: &str, sandbox_uid: &str, image: &str, sha256: &str) -> String {
    hex(&restore_mac(token, sandbox_uid, image, sha256)
        .finalize()
        .into_bytes())
}

/// Whether `signature` is the operator's for this restore.
pub fn check_restore(
    token: &str,
    sandbox_uid: &str,
    image: &str,
    sha256: &str,
    signature: &str,
) -> Result<(), Unsigned> {
    if token.is_empty() {
        return Err(Unsigned::NoToken);
    }
    let tag = unhex(signature).ok_or(Unsigned::Wrong)?;
    restore_mac(token, sandbox_uid, image, sha256)
        .verify_slice(&tag)
        .map_err(|_| Unsigned::Wrong)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_request_checks_and_every_change_breaks_it() {
        let body = br#"{"sandboxUid":"u","pod":"p","suspension":3,"keep":2}"#;
        let header = authorization(TOKEN, "POST", "/checkpoint", body);
        assert_eq!(
            check_request(TOKEN, "POST", "/checkpoint", body, Some(&header)),
            Ok(())
        );
        let other_body = br#"{"sandboxUid":"u","pod":"p","suspension":4,"keep":2}"#;
        for (method, path, body, token) in [
            ("POST", "/checkpoint", &other_body[..], TOKEN),
            ("GET", "/checkpoint", &body[..], TOKEN),
            ("POST", "/status", &body[..], TOKEN),
            ("POST", "/checkpoint", &body[..], "another sandbox's token"),
        ] {
            assert_eq!(
                check_request(token, method, path, body, Some(&header)),
                Err(Unsigned::Wrong),
                "{method} {path} with {token}"
            );
        }
    }

    #[test]
    fn unsigned_and_malformed_requests_are_refused() {
        let check = |header: Option<&str>| check_request(TOKEN, "GET", "/status", b"", header);
        assert_eq!(check(None), Err(Unsigned::Missing));
        assert_eq!(
            check(Some(&format!("Bearer {TOKEN}"))),
            Err(Unsigned::Missing)
        );
        assert_eq!(check(Some(&format!("{SCHEME} zz"))), Err(Unsigned::Wrong));
        assert_eq!(check(Some(&format!("{SCHEME} ab"))), Err(Unsigned::Wrong));
        assert_eq!(check(Some(&format!("{SCHEME} ∂∂"))), Err(Unsigned::Wrong));
        let good = authorization(TOKEN, "GET", "/status", b"");
        assert_eq!(
            check_request("", "GET", "/status", b"", Some(&good)),
            Err(Unsigned::NoToken),
            "a supervisor without a token accepts nothing, not everything"
        );
    }

    #[test]
    fn a_restore_signature_binds_sandbox_image_and_digest() {
        let sha = "a".repeat(64);
        let signature = restore_signature(TOKEN, "uid-1", "ckpt-3-1", &sha);
        assert_eq!(
            check_restore(TOKEN, "uid-1", "ckpt-3-1", &sha, &signature),
            Ok(())
        );
        let other_sha = "b".repeat(64);
        for (uid, image, sha) in [
            ("uid-2", "ckpt-3-1", sha.as_str()),
            ("uid-1", "ckpt-4-1", sha.as_str()),
            ("uid-1", "ckpt-3-1", other_sha.as_str()),
        ] {
            assert_eq!(
                check_restore(TOKEN, uid, image, sha, &signature),
                Err(Unsigned::Wrong)
            );
        }
        assert_eq!(
            check_restore(TOKEN, "uid-1", "ckpt-3-1", &sha, ""),
            Err(Unsigned::Wrong)
        );
    }
}
