//! Helm, built from the pinned Go module in `tools/helm`, for rendering `deploy/helm/sandman`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::binaries::cache_root;
use crate::error::Error;

const GO_MOD: &str = include_str!("../../../tools/helm/go.mod");
const GO_SUM: &str = include_str!("../../../tools/helm/go.sum");

fn fingerprint() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in GO_MOD.bytes().chain(GO_SUM.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The helm binary, built on first use (a few minutes cold) and reused after that.
pub fn helm() -> Result<PathBuf, Error> {
    let dir = cache_root().join("helm").join(&fingerprint()[..12]);
    let binary = dir.join("helm");
    if binary.is_file() {
        return Ok(binary);
    }
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/helm");
    let scratch = dir.with_extension(format!("build-{}", std::process::id()));
    eprintln!(
        "testenv: building helm from {} into {}",
        module.display(),
        dir.display()
    );
    let status = Command::new(std::env::var_os("GO").unwrap_or_else(|| "go".into()))
        .current_dir(&module)
        .args(["build", "-o"])
        .arg(scratch.join("helm"))
        .arg("helm.sh/helm/v4/cmd/helm")
        .status()
        .map_err(|e| Error::Build(format!("run go in {}: {e}", module.display())))?;
    if !status.success() {
        return Err(Error::Build(format!("go build helm exited with {status}")));
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("create {}", parent.display())))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&scratch, &dir)
        .map_err(Error::io(format!("move helm into {}", dir.display())))?;
    Ok(binary)
}

/// `helm template sandman deploy/helm/sandman --namespace sandman-system`, as the checked-in
/// rendering in `deploy/manifests/sandman.yaml` was made.
pub fn render(chart: &Path, extra: &[&str]) -> Result<String, Error> {
    let output = Command::new(helm()?)
        .args(["template", "sandman"])
        .arg(chart)
        .args(["--namespace", "sandman-system"])
        .args(extra)
        .output()
        .map_err(|e| Error::Build(format!("run helm: {e}")))?;
    if !output.status.success() {
        return Err(Error::Build(format!(
            "helm template failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
