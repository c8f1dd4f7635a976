//! User namespaces for pods with `hostUsers: false`: each pod gets 65536 host ids of its own,
//! and the volumes it writes are handed to them. A kubelet would id-map the mounts; the runc
//! here (Debian's 1.1) has no id-mapped mounts, so ownership is shifted on disk instead.
//!
//! Ranges start at host id 2^20 (above any account of the machine's) and are 65536-aligned,
//! so that a file's id within its range (`id % 65536`) is the container's own id whatever range
//! wrote it, and a volume moves from one pod's range to the next by a shift. The node's slot
//! picks a band of 64 ranges, so nodes of test binaries that run at once never share one.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use sandman_oci_bundle::IdRange;

use super::Agent;

/// The ids in one range, which is also its alignment.
const SIZE: u32 = 65_536;
/// The first range's index: host ids below 2^20 are never a pod's.
const FIRST: u32 = 16;
/// Ranges per node: a node hands them out in turn, then starts its band again.
const PER_NODE: u32 = 64;

/// The next range of `agent`'s band.
pub(super) fn range(agent: &Agent) -> IdRange {
    let turn = agent.user_namespaces.fetch_add(1, Ordering::Relaxed) % PER_NODE;
    range_of(agent.network.slot(), turn)
}

fn range_of(slot: u8, turn: u32) -> IdRange {
    IdRange {
        host: (FIRST + u32::from(slot) * PER_NODE + turn) * SIZE,
        size: SIZE,
    }
}

/// Hands `dir` and everything beneath it to `ids`: an entry owned by id `n` (of the host, or of
/// any earlier range) becomes `ids.host + n % 65536`. Links are changed themselves, never
/// followed.
pub(super) fn shift(dir: &Path, ids: IdRange) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    let into = |id: u32| ids.host + id % SIZE;
    std::os::unix::fs::lchown(dir, Some(into(meta.uid())), Some(into(meta.gid())))?;
    if meta.file_type().is_dir() {
        for entry in std::fs::read_dir(dir)? {
            shift(&entry?.path(), ids)?;
        }
    }
    Ok(())
}

/// Makes the directory of every mount's destination under `rootfs` that is missing.
pub(super) fn mount_points(
    rootfs: &Path,
    mounts: &[sandman_oci_bundle::Mount],
) -> std::io::Result<()> {
    for mount in mounts {
        // A pod's mount path is the tenant's: one that climbs out of the image is refused,
        // never made on the node.
        if mount
            .destination
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(std::io::Error::other(format!(
                "{}: a mount path may not hold ..",
                mount.destination.display()
            )));
        }
        let inside = rootfs.join(
            mount
                .destination
                .strip_prefix("/")
                .unwrap_or(&mount.destination),
        );
        if std::fs::symlink_metadata(&inside).is_err() {
            std::fs::create_dir_all(&inside)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_aligned_and_no_two_nodes_share_one() {
        let first = range_of(0, 0);
        assert_eq!(first.host, 1 << 20);
        assert_eq!(first.host % SIZE, 0);
        let last_of_slot_0 = range_of(0, PER_NODE - 1);
        let first_of_slot_1 = range_of(1, 0);
        assert!(last_of_slot_0.host + SIZE <= first_of_slot_1.host);
        let highest = range_of(u8::MAX, PER_NODE - 1);
        assert!(
            u64::from(highest.host) + u64::from(SIZE) <= u64::from(u32::MAX),
            "ranges fit in 32 bits"
        );
    }

    /// Needs root, to give files away.
    #[test]
    fn a_volume_moves_to_the_next_range_and_keeps_its_ids_within_it() {
        if !nix_is_root() {
            eprintln!("SKIPPED: needs root to chown");
            return;
        }
        let dir = std::env::temp_dir().join(format!("sandman-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a");
        std::fs::write(&file, "x").expect("file");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).expect("link");
        std::os::unix::fs::chown(&file, Some(1000), Some(1000)).expect("chown");
        let first = range_of(3, 0);
        shift(&dir, first).expect("shift");
        let owner = |p: &Path| {
            let m = std::fs::symlink_metadata(p).expect("meta");
            (m.uid(), m.gid())
        };
        assert_eq!(owner(&file), (first.host + 1000, first.host + 1000));
        assert_eq!(owner(&dir), (first.host, first.host));
        assert_eq!(
            owner(Path::new("/etc/passwd")),
            (0, 0),
            "a link is not followed"
        );
        let next = range_of(3, 1);
        shift(&dir, next).expect("shift again");
        assert_eq!(owner(&file), (next.host + 1000, next.host + 1000));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    fn nix_is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}
