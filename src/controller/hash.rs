//! A stable content hash (FNV-1a over canonical JSON): stable across Rust releases and operator
//! restarts, unlike `DefaultHasher`, so an upgrade never looks like a template change.

use serde::Serialize;

pub fn content_hash(value: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
