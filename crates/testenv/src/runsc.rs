//! gVisor's `runsc`, built from the pinned `gvisor.dev/gvisor` module in `tools/runsc`, for the
//! checkpoint supervisor: a current runsc runs, checkpoints and restores in a user namespace
//! with `SYS_ADMIN` and `SETFCAP` alone, which Debian's 2022 one cannot (`docs/checkpoint.md`).
//! The pure-Go build (`CGO_ENABLED=0`): a cgo build fails to start sandboxes here with
//! `error executing umounter`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Error;
use crate::binaries::{FileLock, cache_root, fingerprint};

const GO_MOD: &str = include_str!("../../../tools/runsc/go.mod");
const GO_SUM: &str = include_str!("../../../tools/runsc/go.sum");
const PACKAGE: &str = "gvisor.dev/gvisor/runsc";

/// The pinned gVisor version, as `go.mod` requires it.
pub fn version() -> &'static str {
    GO_MOD
        .lines()
        .find_map(|l| l.trim().strip_prefix("gvisor.dev/gvisor "))
        .map_or("unknown", |v| {
            v.split_whitespace().next().unwrap_or("unknown")
        })
}

/// Where the pinned runsc is cached: named by the module's content, so a new pin builds afresh.
pub fn cache_path() -> PathBuf {
    cache_root()
        .join("runsc")
        .join(&fingerprint(&[GO_MOD, GO_SUM])[..12])
        .join("runsc")
}

/// The pinned runsc, built on first use (once per process; parallel test binaries wait on a
/// lock file, and a build cut short leaves no half binary).
pub fn runsc() -> Result<PathBuf, Error> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| locate_or_build().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Build)
}

fn locate_or_build() -> Result<PathBuf, Error> {
    let path = cache_path();
    if path.is_file() {
        return Ok(path);
    }
    let dir = path
        .parent()
        .ok_or_else(|| Error::Build("the runsc cache has no parent".into()))?;
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let lock_path = dir.join(".build.lock");
    let lock =
        File::create(&lock_path).map_err(Error::io(format!("create {}", lock_path.display())))?;
    let _guard = FileLock::exclusive(&lock)?;
    if path.is_file() {
        return Ok(path);
    }
    let module = module_dir();
    eprintln!(
        "testenv: building runsc {} from {} (about 2 minutes, once)",
        version(),
        module.display()
    );
    let scratch = dir.join(format!(".runsc-{}", std::process::id()));
    let status = Command::new(std::env::var_os("GO").unwrap_or_else(|| "go".into()))
        .current_dir(&module)
        .env("CGO_ENABLED", "0")
        .args(["build", "-o"])
        .arg(&scratch)
        .arg(PACKAGE)
        .status()
        .map_err(|e| Error::Build(format!("run go in {}: {e}", module.display())))?;
    if !status.success() {
        let _ = std::fs::remove_file(&scratch);
        return Err(Error::Build(format!(
            "go build {PACKAGE} exited with {status}"
        )));
    }
    std::fs::rename(&scratch, &path)
        .map_err(Error::io(format!("move runsc into {}", path.display())))?;
    Ok(path)
}

/// `tools/runsc`; `SANDMAN_RUNSC_MODULE` overrides it for a binary moved from its source tree.
fn module_dir() -> PathBuf {
    std::env::var_os("SANDMAN_RUNSC_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/runsc"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pinned_version_is_read_from_go_mod() {
        assert_eq!(super::version(), "v0.0.0-20260905035102-160fafc42237");
    }
}
