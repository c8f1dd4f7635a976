//! The sha256 of a checkpoint image, which the operator records and a restore must match.
//! Hashing is most of a restore's time (0.65 s of 1.17 s for 1 GiB on 2026-12-04: sha256 runs at
//! about 1.6 GB/s on one core here, near what OpenSSL does), so each file is hashed in pieces
//! on every core the supervisor's cgroup allows, and the digest is the sha256 over the pieces'.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::beneath;
use super::image::{META_FILE, RESTORED_FILE};

/// The pieces a file is hashed in, apart and at once.
const PIECE: u64 = 64 << 20;
/// At most this many threads hash at once.
const MOST_THREADS: usize = 8;

/// The image's files that are hashed, in name order: every regular file but its records.
fn hashed_files(dir: &impl AsFd) -> std::io::Result<Vec<String>> {
    let mut files: Vec<String> = beneath::files(dir)?
        .into_iter()
        .filter(|name| name != META_FILE && name != RESTORED_FILE && !name.ends_with(".partial"))
        .collect();
    files.sort();
    Ok(files)
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 over an image's files, and their total size: in name order, each file as its name,
/// a NUL, its length (8 bytes, little-endian) and the sha256 of each 64 MiB piece of it in
/// order. The names are part of it, so a file renamed or swapped for another changes the
/// digest; a file whose length changes while it is read is an error.
pub fn digest(dir: &impl AsFd) -> std::io::Result<(String, u64)> {
    digest_in_pieces(dir, PIECE)
}

fn digest_in_pieces(dir: &impl AsFd, piece: u64) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    for name in hashed_files(dir)? {
        let file = beneath::open_file(dir, &name)?;
        let length = file.metadata()?.len();
        hash_header(&mut hasher, &name, length);
        hash_pieces(&mut hasher, &file, length, piece)?;
        if file.metadata()?.len() != length {
            return Err(std::io::Error::other(format!(
                "{name} changed length while it was hashed"
            )));
        }
        total = total.saturating_add(length);
    }
    Ok((hex(hasher.finalize()), total))
}

/// What stands for a file before its bytes: its name, a NUL and its length.
fn hash_header(hasher: &mut Sha256, name: &str, length: u64) {
    hasher.update(name.as_bytes());
    hasher.update([0u8]);
    hasher.update(length.to_le_bytes());
}

/// Adds the sha256 of each piece of the first `length` bytes of `file` to `hasher`, in order,
/// hashing as many pieces at once as there are threads. Only one such batch is held at a
/// time, so a file of any size (a sparse one the agent planted) costs no more memory.
fn hash_pieces(hasher: &mut Sha256, file: &File, length: u64, piece: u64) -> std::io::Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MOST_THREADS) as u64;
    let mut start = 0;
    while start < length {
        let batch: Vec<std::io::Result<[u8; 32]>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|n| start + n * piece)
                .take_while(|&from| from < length)
                .map(|from| scope.spawn(move || hash_range(file, from, (from + piece).min(length))))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("a hashing thread panicked")))
                })
                .collect()
        });
        for digest in batch {
            hasher.update(digest?);
        }
        start = start.saturating_add(threads * piece);
    }
    Ok(())
}

fn hash_range(file: &File, start: u64, end: u64) -> std::io::Result<[u8; 32]> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut hasher = Sha256::new();
    let mut at = start;
    while at < end {
        let want = usize::try_from(end - at).map_or(buffer.len(), |left| left.min(buffer.len()));
        let read = file.read_at(&mut buffer[..want], at)?;
        if read == 0 {
            return Err(std::io::Error::other("the file shrank while it was hashed"));
        }
        hasher.update(&buffer[..read]);
        at += read as u64;
    }
    Ok(hasher.finalize().into())
}

/// The digest images taken before 2026-12-04 were recorded with: the same, but each file's
/// bytes hashed whole, in one stream. Only asked when [`digest`] does not match, so that an
/// image taken before an upgrade still restores.
pub fn streamed_digest(dir: &impl AsFd) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for name in hashed_files(dir)? {
        let mut file = beneath::open_file(dir, &name)?;
        hash_header(&mut hasher, &name, file.metadata()?.len());
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(hex(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> impl AsFd {
        beneath::open_path(dir.path(), false).expect("open")
    }

    #[test]
    fn the_digest_covers_names_and_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), b"xy").expect("write");
        let (first, size) = digest(&open(&dir)).expect("digest");
        assert_eq!(size, 2);
        std::fs::write(dir.path().join(META_FILE), b"{}").expect("write");
        assert_eq!(
            digest(&open(&dir)).expect("digest").0,
            first,
            "meta.json is not hashed"
        );
        std::fs::rename(dir.path().join("a"), dir.path().join("b")).expect("rename");
        assert_ne!(digest(&open(&dir)).expect("digest").0, first);
    }

    /// A file of several pieces, hashed on however many threads: the digest is the sha256
    /// over name, length and each piece's sha256, and any byte of any piece changes it.
    /// (Small pieces: a debug build hashes slowly.)
    #[test]
    fn pieces_are_hashed_in_order_and_every_byte_counts() {
        const PIECE: u64 = 4096;
        let dir = tempfile::tempdir().expect("tempdir");
        let length = (9 * PIECE + 5) as usize;
        let mut bytes: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("pages.img"), &bytes).expect("write");
        let mut expected = Sha256::new();
        expected.update(b"pages.img\0");
        expected.update((length as u64).to_le_bytes());
        for piece in bytes.chunks(PIECE as usize) {
            expected.update(Sha256::digest(piece));
        }
        let (actual, size) = digest_in_pieces(&open(&dir), PIECE).expect("digest");
        assert_eq!(actual, hex(expected.finalize()));
        assert_eq!(size, length as u64);
        for at in [0, PIECE as usize, length - 1] {
            bytes[at] ^= 1;
            std::fs::write(dir.path().join("pages.img"), &bytes).expect("write");
            let changed = digest_in_pieces(&open(&dir), PIECE).expect("digest").0;
            assert_ne!(changed, actual, "byte {at}");
            bytes[at] ^= 1;
        }
    }

    #[test]
    fn the_streamed_digest_is_the_one_images_were_recorded_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), b"xy").expect("write");
        let mut expected = Sha256::new();
        expected.update(b"a\0");
        expected.update(2u64.to_le_bytes());
        expected.update(b"xy");
        assert_eq!(
            streamed_digest(&open(&dir)).expect("digest"),
            hex(expected.finalize())
        );
    }
}
