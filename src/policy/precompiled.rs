//! An on-disk cache of compiled policies, keyed by the component's sha256 and the engine's
//! compatibility hash, so that a restarted operator loads its policies without recompiling.
//!
//! Loading native code from disk is `unsafe` in wasmtime: the bytes are trusted to be what
//! wasmtime wrote. The cache therefore lives in a directory only the operator may write (it is
//! created with mode 0700), entries are written to a temporary name and renamed into place, and
//! an entry wasmtime rejects is recompiled and replaced rather than trusted.

use std::hash::{Hash, Hasher};
use std::io::Write;
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
}

pub struct PrecompiledCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash: a wasmtime upgrade or a configuration change
    /// misses the cache instead of loading code built for another engine.
    engine_key: String,
}

impl PrecompiledCache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        create_private_dir(dir).map_err(|source| CacheError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
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
