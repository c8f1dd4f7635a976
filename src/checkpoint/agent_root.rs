//! The agent's root file system as runsc is given it. runsc's gofer makes a mount point in the
//! root, on the host side, for each of the agent's volumes, so the root must be writable there;
//! but in a pod the agent's image is a read-only image volume, and a tenant's image has no
//! directory for the volumes the tenant names (`/workspace` in `python:3.12-slim`). So a root
//! that cannot be written is laid under an overlay: the image is its lower layer, a tmpfs of
//! the supervisor's own holds the upper one, and the image is never changed. The upper layer
//! holds the mount points only: what the agent writes to its root lands in gVisor's memory
//! (`--overlay2=root:memory`), and so in its checkpoint. A root that can be written (a plain
//! directory) is used as it is.
//!
//! The overlay is made in the supervisor's container's own mount namespace, by its root in the
//! pod's user namespace (`userxattr`: no trusted xattrs, which only the host's root may write);
//! overlayfs asks `DAC_OVERRIDE` of whoever mounts it, for its work directory.

use std::path::{Path, PathBuf};

use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, mount};

use super::CheckpointError;

/// The root runsc runs the agent from: `image` itself when it can be written, otherwise an
/// overlay of it under `scratch` (the same path in every pod, as a restore needs).
pub fn prepare(image: &Path, scratch: &Path) -> Result<PathBuf, CheckpointError> {
    if writable(image)? {
        return Ok(image.to_path_buf());
    }
    let base = scratch.join("agent-root");
    let made = |what: &str| CheckpointError::io(format!("{what} {}", base.display()));
    std::fs::create_dir_all(&base).map_err(made("create"))?;
    mount(
        "tmpfs",
        &base,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=0700",
    )
    .map_err(|e| made("mount a tmpfs on")(e.into()))?;
    let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
    for dir in [&upper, &work, &merged] {
        std::fs::create_dir(dir).map_err(made("lay out"))?;
    }
    let options = format!(
        "userxattr,lowerdir={},upperdir={},workdir={}",
        escaped(image)?,
        escaped(&upper)?,
        escaped(&work)?
    );
    let options = std::ffi::CString::new(options)
        .map_err(|_| CheckpointError::Invalid("a path with a NUL byte".into()))?;
    mount(
        "overlay",
        &merged,
        "overlay",
        MountFlags::NOSUID | MountFlags::NODEV,
        options.as_c_str(),
    )
    .map_err(|e| {
        CheckpointError::Io(
            format!(
                "overlay {} over the agent's image {} (the supervisor needs SYS_ADMIN and DAC_OVERRIDE in its user namespace)",
                merged.display(),
                image.display()
            ),
            e.into(),
        )
    })?;
    Ok(merged)
}

/// Whether `dir` is on a file system mounted read-write and this process may write it.
fn writable(dir: &Path) -> Result<bool, CheckpointError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| {
        CheckpointError::Io(format!("the agent's root {}", dir.display()), e.into())
    })?;
    let read_only = stat.f_flag.contains(StatVfsMountFlags::RDONLY);
    Ok(!read_only && rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok())
}

/// A path as an overlay option takes it: `,` and `:` separate options and layers, so a path
/// with either (or `\`) is refused rather than misread.
fn escaped(path: &Path) -> Result<String, CheckpointError> {
    let text = path
        .to_str()
        .ok_or_else(|| CheckpointError::Invalid(format!("{} is not UTF-8", path.display())))?;
    if text.contains([',', ':', '\\']) {
        return Err(CheckpointError::Invalid(format!(
            "{text}: an overlay layer's path may not hold ',', ':' or '\\'"
        )));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_root_is_used_as_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            prepare(dir.path(), scratch.path()).expect("prepared"),
            dir.path()
        );
        assert!(!scratch.path().join("agent-root").exists());
    }

    #[test]
    fn a_layer_path_that_an_overlay_would_misread_is_refused() {
        assert!(escaped(Path::new("/a/b")).is_ok());
        for bad in ["/a,upperdir=/x", "/a:/b", "/a\\b"] {
            assert!(
                matches!(escaped(Path::new(bad)), Err(CheckpointError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
