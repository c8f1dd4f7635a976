//! Checkpoint images on the Sandbox's volume: one directory per image, named so that names
//! sort by age, each with the files `runsc checkpoint` wrote and a `meta.json` that says whose
//! image it is. Nothing is restored that does not match the sha256 the operator recorded.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::digest::{digest, streamed_digest};
use super::{CheckpointError, CheckpointRecord, beneath};

/// The file beside an image's own files that records what it is; not part of the digest.
pub const META_FILE: &str = "meta.json";
/// Written once a pod restored the image: after that the agent and its volume move on, and
/// restoring it again (a second pod of the same resume) would put memory behind the files.
pub const RESTORED_FILE: &str = "restored";

/// Why an image is not restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing from the volume")]
    Missing,
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("foreign: {0}")]
    Foreign(String),
    #[error("restored once already, at {0}; the volume has moved on since")]
    Consumed(String),
}

/// The images under one directory (on the Sandbox's volume). Every access goes through
/// [`beneath`]: the agent writes this volume and may have planted links anywhere in it.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The most `meta.json` is read of: a record is a few hundred bytes.
const MAX_META_BYTES: u64 = 64 << 10;

/// One image's directory, held open: what is read, written or handed to `runsc` is this
/// directory, whatever its name has since become.
#[derive(Debug)]
pub struct ImageDir {
    fd: OwnedFd,
}

impl ImageDir {
    /// A path to this directory for `runsc`, valid while `self` lives.
    pub fn path(&self) -> PathBuf {
        beneath::path_of(&self.fd)
    }

    /// Another handle on the same directory (for a blocking task).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
        })
    }
}

impl AsFd for ImageDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn failed(&self, what: &str) -> impl FnOnce(std::io::Error) -> CheckpointError {
        CheckpointError::io(format!("{what} {}", self.dir.display()))
    }

    /// The store's directory, opened anew each time (the agent may have swapped it since).
    fn root(&self, create: bool) -> std::io::Result<OwnedFd> {
        beneath::open_path(&self.dir, create)
    }

    /// A new, empty directory for an image of `suspension`, named to sort after every image
    /// before it.
    pub fn create(&self, suspension: u64) -> Result<(String, ImageDir), CheckpointError> {
        let root = self.root(true).map_err(self.failed("create"))?;
        let millis = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        let name = format!("{millis:015}-s{suspension}");
        beneath::remove_all(&root, &name).map_err(self.failed(&format!("clear {name} in")))?;
        rustix::fs::mkdirat(&root, name.as_str(), rustix::fs::Mode::RWXU)
            .map_err(|e| self.failed(&format!("create {name} in"))(e.into()))?;
        let fd =
            beneath::open_dir(&root, &name).map_err(self.failed(&format!("open {name} in")))?;
        Ok((name, ImageDir { fd }))
    }

    /// Records what the image is, once its files are complete. Written whole and renamed,
    /// so a crash never leaves half a record that reads as valid.
    pub fn seal(&self, image: &ImageDir, record: &CheckpointRecord) -> Result<(), CheckpointError> {
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| CheckpointError::Invalid(format!("encode {META_FILE}: {e}")))?;
        beneath::write_file(image, META_FILE, &json)
            .map_err(self.failed(&format!("write {}/{META_FILE} in", record.image)))
    }

    /// The image directory `name`, if it is one.
    fn open(&self, name: &str) -> std::io::Result<ImageDir> {
        let root = self.root(false)?;
        Ok(ImageDir {
            fd: beneath::open_dir(&root, name)?,
        })
    }

    /// The record of image `name`, if it has one.
    pub fn record(&self, name: &str) -> Option<CheckpointRecord> {
        let image = self.open(name).ok()?;
        let bytes = beneath::read_file(&image, META_FILE, MAX_META_BYTES).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Image names, oldest first. Only directories count; the rest of the volume is the
    /// agent's and never touched.
    pub fn names(&self) -> Vec<String> {
        let Ok(root) = self.root(false) else {
            return Vec::new();
        };
        let mut names: Vec<String> = beneath::directories(&root)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| is_image_name(n))
            .collect();
        names.sort();
        names
    }

    /// Removes all but the newest `keep` images (at least one is kept). Returns the names
    /// removed.
    pub fn prune(&self, keep: u32) -> Result<Vec<String>, CheckpointError> {
        let names = self.names();
        let keep = usize::try_from(keep.max(1)).unwrap_or(usize::MAX);
        let excess = names.len().saturating_sub(keep);
        let root = self.root(false).map_err(self.failed("open"))?;
        let mut removed = Vec::new();
        for name in names.into_iter().take(excess) {
            beneath::remove_all(&root, &name).map_err(self.failed(&format!("remove {name} in")))?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// Records that a pod restored image `name`.
    pub fn mark_restored(&self, name: &str) -> Result<(), CheckpointError> {
        let at = k8s_openapi::jiff::Timestamp::now().to_string();
        self.open(name)
            .and_then(|image| beneath::write_file(&image, RESTORED_FILE, at.as_bytes()))
            .map_err(self.failed(&format!("write {name}/{RESTORED_FILE} in")))
    }

    /// Removes one image (a checkpoint that failed half-way).
    pub fn discard(&self, name: &str) {
        if is_image_name(name)
            && let Ok(root) = self.root(false)
        {
            let _ = beneath::remove_all(&root, name);
        }
    }

    /// The directory of image `name` if it is there, whole, this Sandbox's, and its files hash
    /// to `sha256`.
    pub fn verify(&self, name: &str, sha256: &str, sandbox_uid: &str) -> Result<ImageDir, Refusal> {
        if !is_image_name(name) {
            return Err(Refusal::Foreign(format!("{name:?} is not an image name")));
        }
        let image = self.open(name).map_err(|_| Refusal::Missing)?;
        let record = beneath::read_file(&image, META_FILE, MAX_META_BYTES)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CheckpointRecord>(&bytes).ok())
            .ok_or_else(|| Refusal::Corrupt(format!("no readable {META_FILE}")))?;
        if let Ok(at) = beneath::read_file(&image, RESTORED_FILE, 256) {
            return Err(Refusal::Consumed(
                String::from_utf8_lossy(&at).trim().to_string(),
            ));
        }
        if record.sandbox_uid != sandbox_uid {
            return Err(Refusal::Foreign(format!(
                "taken for Sandbox {}, not {sandbox_uid}",
                record.sandbox_uid
            )));
        }
        let unreadable = |e: std::io::Error| Refusal::Corrupt(format!("cannot read it: {e}"));
        let (actual, _) = digest(&image).map_err(unreadable)?;
        if actual != sha256 && streamed_digest(&image).map_err(unreadable)? != sha256 {
            return Err(Refusal::Corrupt(format!(
                "sha256 is {actual}, the Sandbox recorded {sha256}"
            )));
        }
        Ok(image)
    }
}

/// An image directory's name: digits, `-s`, digits. Anything else (a path, `..`) is not one.
pub fn is_image_name(name: &str) -> bool {
    name.split_once("-s").is_some_and(|(millis, suspension)| {
        !millis.is_empty()
            && !suspension.is_empty()
            && millis.bytes().all(|b| b.is_ascii_digit())
            && suspension.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(store: &Store, name: &str, uid: &str) -> CheckpointRecord {
        let image = store.open(name).expect("open");
        let (sha256, size_bytes) = digest(&image).expect("digest");
        CheckpointRecord {
            image: name.into(),
            sha256,
            size_bytes,
            taken_at: k8s_openapi::jiff::Timestamp::now(),
            sandbox_uid: uid.into(),
            pod: "p".into(),
            suspension: 1,
            took_ms: 1,
        }
    }

    fn image(store: &Store, suspension: u64, content: &[u8]) -> CheckpointRecord {
        let (name, image) = store.create(suspension).expect("create");
        std::fs::write(store.dir().join(&name).join("checkpoint.img"), content).expect("write");
        let record = record(store, &name, "uid-1");
        store.seal(&image, &record).expect("seal");
        // Names are by the millisecond; two images in one millisecond would share one.
        std::thread::sleep(std::time::Duration::from_millis(2));
        record
    }

    #[test]
    fn a_sealed_image_verifies_and_any_change_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let taken = image(&store, 1, b"memory");
        assert!(store.verify(&taken.image, &taken.sha256, "uid-1").is_ok());
        assert!(matches!(
            store.verify(&taken.image, &taken.sha256, "uid-2"),
            Err(Refusal::Foreign(_))
        ));
        assert!(matches!(
            store.verify("../etc", &taken.sha256, "uid-1"),
            Err(Refusal::Foreign(_))
        ));
        assert!(matches!(
            store.verify("000000000000001-s9", &taken.sha256, "uid-1"),
            Err(Refusal::Missing)
        ));
        store.mark_restored(&taken.image).expect("mark");
        assert!(matches!(
            store.verify(&taken.image, &taken.sha256, "uid-1"),
            Err(Refusal::Consumed(_))
        ));
        std::fs::remove_file(dir.path().join(&taken.image).join(RESTORED_FILE)).expect("rm");
        std::fs::write(
            dir.path().join(&taken.image).join("checkpoint.img"),
            b"memorx",
        )
        .expect("corrupt");
        assert!(matches!(
            store.verify(&taken.image, &taken.sha256, "uid-1"),
            Err(Refusal::Corrupt(_))
        ));
        std::fs::remove_file(dir.path().join(&taken.image).join(META_FILE)).expect("rm");
        assert!(matches!(
            store.verify(&taken.image, &taken.sha256, "uid-1"),
            Err(Refusal::Corrupt(_))
        ));
    }

    /// An image recorded before the digest was hashed in pieces still restores after an
    /// upgrade: its recorded sha256 is the streamed one.
    #[test]
    fn an_image_recorded_with_the_streamed_digest_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let taken = image(&store, 1, b"memory");
        let image = store.open(&taken.image).expect("open");
        let streamed = streamed_digest(&image).expect("digest");
        assert_ne!(streamed, taken.sha256);
        assert!(store.verify(&taken.image, &streamed, "uid-1").is_ok());
        assert!(matches!(
            store.verify(&taken.image, &"0".repeat(64), "uid-1"),
            Err(Refusal::Corrupt(_))
        ));
    }

    #[test]
    fn pruning_keeps_the_newest_and_never_the_agents_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path());
        let taken: Vec<_> = (1..=4).map(|s| image(&store, s, b"m")).collect();
        std::fs::create_dir(dir.path().join("notes")).expect("agent dir");
        let removed = store.prune(2).expect("prune");
        assert_eq!(
            removed,
            vec![taken[0].image.clone(), taken[1].image.clone()]
        );
        assert_eq!(
            store.names(),
            vec![taken[2].image.clone(), taken[3].image.clone()]
        );
        assert!(dir.path().join("notes").is_dir());
        // Zero still keeps the newest: the one a resume would restore.
        store.prune(0).expect("prune");
        assert_eq!(store.names(), vec![taken[3].image.clone()]);
    }
}
