//! An on-disk cache of compiled policies, keyed by the component's sha256 and the engine's
//! compatibility hash, so that a restarted operator loads its policies without recompiling.
//!
//! Loading native code from disk is `unsafe` in wasmtime: the bytes are trusted to be what
//! wasmtime wrote. The given directory may be shared and world-writable (a Kubernetes emptyDir
//! is 0777), so the cache lives in a subdirectory `private/` that the operator creates, owns and
//! keeps at mode 0700, and every entry is checked before it is loaded: a regular file (no
//! symlink), owned by the operator's user, writable by nobody else, in that private directory.
//! An entry that fails a check, or that wasmtime rejects, is recompiled and replaced rather than
//! trusted. Entries are written to a temporary name and renamed into place.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a loaded policy's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled by this process.
    Fresh,
    /// Read from the on-disk cache.
    FromCache,
    /// Already linked in this engine, for another policy or revision with the same component.
    InMemory,
}

impl Compiled {
    pub fn as_str(self) -> &'static str {
        match self {
            Compiled::Fresh => "compiled",
            Compiled::FromCache => "cache",
            Compiled::InMemory => "memory",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("create the policy cache directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy cache directory {path} is not private to this user: {reason}")]
    NotPrivate { path: PathBuf, reason: String },
}

pub struct PrecompiledCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash: a wasmtime upgrade or a configuration change
    /// misses the cache instead of loading code built for another engine.
    engine_key: String,
}

impl PrecompiledCache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        let create = |path: &Path| {
            create_private_dir(path).map_err(|source| CacheError::Create {
                path: path.to_path_buf(),
                source,
            })
        };
        create(dir)?;
        let dir = dir.join("private");
        create(&dir)?;
        // An existing directory keeps its mode; one we own is narrowed, one we do not fails.
        let narrowed = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        if let Err(error) = narrowed
            .map_err(|e| e.to_string())
            .and_then(|()| private(&dir))
        {
            return Err(CacheError::NotPrivate {
                path: dir,
                reason: error,
            });
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    /// The directory given to [`PrecompiledCache::open`].
    pub fn dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of the component with this sha256, if there is a usable one.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        if let Err(reason) = private(&self.dir).and_then(|()| private(&path)) {
            tracing::warn!(path = %path.display(), reason, "not loading a policy cache entry that others could have written");
            return None;
        }
        match deserialize(engine, &path) {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring an unusable policy cache entry");
                None
            }
        }
    }

    /// Stores a compilation. A cache that cannot be written costs a recompile on restart, not
    /// a failed load, so errors are logged and dropped.
    pub fn put(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let written = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
            .and_then(|bytes| write_atomically(&path, &bytes));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "could not write the policy cache");
        }
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `PrecompiledCache::put` of an engine with the same
    // compatibility hash (it is in the name), into a directory only this user can write, and
    // renamed into place whole; wasmtime still checks its header and engine settings.
    unsafe { Component::deserialize_file(engine, path) }
}

/// `Ok` when `path` is no symlink, is owned by this process's user, and nobody else may write
/// it; else why not.
fn private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if metadata.file_type().is_symlink() {
        return Err("it is a symbolic link".into());
    }
    // /proc/self belongs to the process's effective user.
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| format!("cannot tell this process's user: {e}"))?
        .uid();
    if metadata.uid() != me {
        return Err(format!("owned by uid {}, not {me}", metadata.uid()));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(format!(
            "mode {:o} lets others write",
            metadata.mode() & 0o7777
        ));
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    #[test]
    fn a_world_writable_directory_gets_a_private_one_inside() {
        let shared = std::env::temp_dir().join(format!("sandman-cache-{}", std::process::id()));
        std::fs::create_dir_all(&shared).expect("dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let cache = PrecompiledCache::open(&shared, &engine()).expect("open");
        let mode = std::fs::metadata(shared.join("private"))
            .map(|m| m.permissions().mode() & 0o777)
            .expect("private dir");
        assert_eq!(mode, 0o700);
        assert_eq!(private(&cache.dir), Ok(()));
        // Someone widened it since: opening narrows it again.
        std::fs::set_permissions(
            shared.join("private"),
            std::fs::Permissions::from_mode(0o777),
        )
        .expect("chmod");
        let _ = PrecompiledCache::open(&shared, &engine()).expect("open");
        assert!(private(&shared.join("private")).is_ok());
        let _ = std::fs::remove_dir_all(&shared);
    }

    #[test]
    fn an_entry_others_could_write_is_not_loaded() {
        let shared = std::env::temp_dir().join(format!("sandman-cache-w-{}", std::process::id()));
        let engine = engine();
        let cache = PrecompiledCache::open(&shared, &engine).expect("open");
        let component = Component::new(&engine, "(component)").expect("component");
        cache.put("abc", &component);
        assert!(cache.get(&engine, "abc").is_some(), "its own entry loads");
        let path = cache.path("abc");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(
            cache.get(&engine, "abc").is_none(),
            "a group/world-writable entry does not"
        );
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink("/etc/hostname", &path).expect("symlink");
        assert!(cache.get(&engine, "abc").is_none(), "a symlink does not");
        let _ = std::fs::remove_dir_all(&shared);
    }
}
