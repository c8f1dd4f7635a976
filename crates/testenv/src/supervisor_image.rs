//! The checkpoint supervisor's image for real nodes, laid out as a directory the node loads
//! ([`crate::real_node::RealNode::load_image`]): the `sandman` binary a test runs, the shared
//! libraries it links (a test build is not static), and the pinned runsc, at the paths the
//! operator's supervisor command names. `hack/image.sh supervisor` builds the same layout as
//! an OCI image for a real cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The reference tests give the operator (`--supervisor-image`) and load onto real nodes.
pub const REFERENCE: &str = "sandman.dev/supervisor:test";

/// Where the operator's supervisor command finds `sandman` and runsc in the image
/// (`sandman::controller::sandbox::supervisor`; a test holds the two to the same paths).
pub const SANDMAN_AT: &str = "/usr/local/bin/sandman";
pub const RUNSC_AT: &str = "/usr/local/bin/runsc";

/// Lays the image out under `root`: `sandman` at [`SANDMAN_AT`] and the pinned runsc at
/// [`RUNSC_AT`], with every library `ldd` names for `sandman`.
pub fn supervisor_image(sandman: &Path, root: &Path) -> Result<PathBuf, Error> {
    let runsc = crate::runsc::runsc()?;
    place(sandman, root, SANDMAN_AT)?;
    place(&runsc, root, RUNSC_AT)?;
    for library in libraries(sandman)? {
        let inside = library.to_string_lossy().into_owned();
        place(&library, root, &inside)?;
    }
    for dir in ["proc", "dev", "tmp", "run", "sys"] {
        std::fs::create_dir_all(root.join(dir))
            .map_err(Error::io(format!("create {}", root.join(dir).display())))?;
    }
    Ok(root.to_path_buf())
}

/// `file` at `inside` under `root`: a hard link where it can be (the binaries are large), a copy
/// where not; always of the file itself, never of a link to it (the loader's path,
/// `/lib64/ld-linux-x86-64.so.2`, is a link on the machine to a file the image lacks).
fn place(file: &Path, root: &Path, inside: &str) -> Result<(), Error> {
    let file =
        &std::fs::canonicalize(file).map_err(Error::io(format!("resolve {}", file.display())))?;
    let target = root.join(inside.trim_start_matches('/'));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("create {}", parent.display())))?;
    }
    let _ = std::fs::remove_file(&target);
    std::fs::hard_link(file, &target)
        .or_else(|_| std::fs::copy(file, &target).map(drop))
        .map_err(Error::io(format!(
            "place {} at {}",
            file.display(),
            target.display()
        )))
}

/// The shared libraries `binary` loads, the dynamic loader included, as `ldd` resolves them.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(Error::io(format!("ldd {}", binary.display())))?;
    let listed = String::from_utf8_lossy(&output.stdout);
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", or the loader's
    // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no file.
    Ok(listed
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_libraries_of_a_dynamic_binary_are_found() {
        let found = libraries(Path::new("/bin/sh")).expect("ldd");
        assert!(
            found
                .iter()
                .any(|l| l.to_string_lossy().contains("libc.so")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{found:?}"
        );
    }
}
