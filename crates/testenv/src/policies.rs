//! Builds the guest policies in `policies/` for `wasm32-wasip2`, once per test binary, so tests
//! run real components compiled from this repository.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding `<crate_name>.wasm` for every crate in `policies/`.
pub fn built_policies() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = crate::harness::repo_root();
        let target = crate::harness::target_dir().join("wasm-policies");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(root.join("policies/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo to build the policies");
        assert!(
            status.success(),
            "building policies/ for wasm32-wasip2 failed"
        );
        target.join("wasm32-wasip2/release")
    })
}

/// The bytes of the built policy `crate_name` (underscores, as cargo names the file).
pub fn policy_wasm(crate_name: &str) -> Vec<u8> {
    let path = built_policies().join(format!("{crate_name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The path of the built policy `crate_name`, for commands that take a file.
pub fn policy_wasm_path(crate_name: &str) -> PathBuf {
    built_policies().join(format!("{crate_name}.wasm"))
}
