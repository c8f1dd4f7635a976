//! Finding (or building) the control-plane binaries.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The pinned Go module that builds every binary. Its content names the cache directory, so a
/// change of any pinned version builds afresh instead of reusing stale binaries.
const GO_MOD: &str = include_str!("../../../tools/testenv/go.mod");
const GO_SUM: &str = include_str!("../../../tools/testenv/go.sum");

/// Go packages built from `tools/testenv`, and the file name each one produces.
const PACKAGES: &[(&str, &str)] = &[
    ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
    (
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-controller-manager",
    ),
    ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
    ("k8s.io/kubernetes/cmd/kubectl", "kubectl"),
    ("sigs.k8s.io/kwok/cmd/kwok", "kwok"),
    ("./cmd/etcd", "etcd"),
];

/// Paths of the control-plane binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
}

/// `$XDG_CACHE_HOME/sandman` or `$HOME/.cache/sandman`: outside any clone, so CI runs on the
/// same machine reuse what an earlier run built.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sandman");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("sandman")
}

/// A short, stable fingerprint of the pinned module (FNV-1a), so the cache directory changes
/// whenever `go.mod` or `go.sum` does.
fn module_fingerprint() -> String {
    fingerprint(&[GO_MOD, GO_SUM])
}

/// FNV-1a over `parts`, as 16 hex digits.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl Binaries {
    /// The directory the pinned binaries are built into.
    pub fn cache_dir() -> PathBuf {
        cache_root().join("testenv").join(format!(
            "{}-{}",
            crate::KUBERNETES_VERSION,
            &module_fingerprint()[..12]
        ))
    }

    /// Finds every binary, building the missing ones from `tools/testenv` with Go.
    ///
    /// A binary found in `KUBEBUILDER_ASSETS` (the layout setup-envtest uses) wins, so someone
    /// who already has kube-apiserver, etcd and friends needs no Go for those.
    pub fn locate_or_build() -> Result<Self, Error> {
        let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
        let cache = Self::cache_dir();
        let find = |name: &str| -> Option<PathBuf> {
            let from_assets = assets.as_ref().map(|dir| dir.join(name));
            from_assets
                .filter(|p| p.is_file())
                .or_else(|| Some(cache.join(name)).filter(|p| p.is_file()))
        };
        let missing: Vec<&str> = PACKAGES
            .iter()
            .map(|(_, name)| *name)
            .filter(|name| find(name).is_none())
            .collect();
        if !missing.is_empty() {
            build_into(&cache)?;
        }
        let get = |name: &str| find(name).ok_or_else(|| Error::MissingBinary(cache.join(name)));
        Ok(Self {
            etcd: get("etcd")?,
            kube_apiserver: get("kube-apiserver")?,
            kube_controller_manager: get("kube-controller-manager")?,
            kube_scheduler: get("kube-scheduler")?,
            kubectl: get("kubectl")?,
            kwok: get("kwok")?,
        })
    }
}

/// The Go module that pins the binaries. `SANDMAN_TESTENV_MODULE` overrides the path compiled
/// into this crate, for a binary that has moved away from its source tree.
fn module_dir() -> PathBuf {
    std::env::var_os("SANDMAN_TESTENV_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/testenv"))
}

/// Builds all binaries into `dest`. Concurrent callers (parallel test binaries) serialise on a
/// lock file; the build goes to a scratch directory that is renamed into place, so a build cut
/// short never leaves a half-filled cache.
fn build_into(dest: &Path) -> Result<(), Error> {
    let parent = dest
        .parent()
        .ok_or_else(|| Error::Build("cache dir has no parent".into()))?;
    std::fs::create_dir_all(parent).map_err(Error::io(format!("create {}", parent.display())))?;
    let lock_path = parent.join(".build.lock");
    let lock =
        File::create(&lock_path).map_err(Error::io(format!("create {}", lock_path.display())))?;
    let _guard = FileLock::exclusive(&lock)?;
    if PACKAGES.iter().all(|(_, name)| dest.join(name).is_file()) {
        return Ok(());
    }
    let scratch = parent.join(format!(".build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let module = module_dir();
    eprintln!(
        "testenv: building the control plane ({}) from {} into {}; the first build takes several minutes",
        crate::KUBERNETES_VERSION,
        module.display(),
        dest.display()
    );
    let status = Command::new(std::env::var_os("GO").unwrap_or_else(|| "go".into()))
        .current_dir(&module)
        .arg("build")
        .arg(format!("-ldflags={}", version_ldflags()))
        .arg("-o")
        .arg(format!("{}/", scratch.display()))
        .args(PACKAGES.iter().map(|(pkg, _)| *pkg))
        .status()
        .map_err(|e| Error::Build(format!("run go in {}: {e}", module.display())))?;
    if !status.success() {
        return Err(Error::Build(format!("go build exited with {status}")));
    }
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(&scratch, dest)
        .map_err(Error::io(format!("move build into {}", dest.display())))
}

/// Stamps the Kubernetes version into the binaries (as the release build does), so `/version`
/// and version-skew checks see the pinned release rather than `v0.0.0-master`.
fn version_ldflags() -> String {
    let version = crate::KUBERNETES_VERSION;
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ]
    .iter()
    .flat_map(|pkg| {
        [
            format!("-X {pkg}.gitVersion={version}"),
            format!("-X {pkg}.gitMajor={major}"),
            format!("-X {pkg}.gitMinor={minor}"),
            format!("-X {pkg}.gitTreeState=clean"),
        ]
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// An exclusive `flock` held until dropped.
pub(crate) struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    pub(crate) fn exclusive(file: &'a File) -> Result<Self, Error> {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Error::io("lock the build cache")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as above.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}
