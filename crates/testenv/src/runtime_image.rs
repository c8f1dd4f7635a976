//! The in-Sandbox runtime, built from this repository once per test binary as a static
//! executable (it runs inside whatever image a pod names, busybox included), and laid out as
//! the root of the runtime image: `/sandman-runtime`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The reference tests give the operator (`--runtime-image`) and load onto real nodes.
pub const REFERENCE: &str = "sandman.dev/runtime:test";

/// The directory that is the runtime image's root file system.
pub fn runtime_image() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = crate::harness::repo_root();
        let target = crate::harness::target_dir();
        // A target directory of its own: the static build's final link differs from the
        // workspace's, and sharing one would rebuild each for the other.
        let static_target = target.join("static-runtime");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "rustc",
                "--quiet",
                "--package",
                "sandman-runtime",
                "--bin",
                "sandman-runtime",
                "--profile",
                "static-runtime",
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml"))
            .args(["--", "-C", "target-feature=+crt-static"])
            .env("CARGO_TARGET_DIR", &static_target)
            .status()
            .expect("run cargo to build the runtime");
        assert!(
            status.success(),
            "building the static sandman-runtime failed"
        );
        let image = target.join("runtime-image");
        std::fs::create_dir_all(&image).expect("the runtime image's directory");
        let binary = image.join("sandman-runtime");
        // Copied to a new name and renamed, so a container running the old one is not hit.
        let fresh = image.join(".sandman-runtime.new");
        std::fs::copy(static_target.join("static-runtime/sandman-runtime"), &fresh)
            .expect("copy the runtime into its image");
        std::fs::rename(&fresh, &binary).expect("the runtime in its image");
        image
    })
}
