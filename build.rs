//! Builds the CEL engine (`policies/cel-engine`) for `wasm32-wasip2`, so that the `sandman`
//! binary carries it and CEL policies work with nothing else installed. Set
//! `SANDMAN_CEL_ENGINE_WASM` to a prebuilt component to skip the nested build.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out.join("cel_engine.wasm");
    println!("cargo:rerun-if-env-changed=SANDMAN_CEL_ENGINE_WASM");
    if let Some(prebuilt) = env::var_os("SANDMAN_CEL_ENGINE_WASM") {
        std::fs::copy(&prebuilt, &dest).expect("copy SANDMAN_CEL_ENGINE_WASM");
        return;
    }
    for path in [
        "policies/Cargo.toml",
        "policies/Cargo.lock",
        "policies/cel-engine",
        "policies/sdk",
        "crates/policy-wire",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    // Beside the tests' build of the same workspace, so neither builds it twice.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| out.join("../../.."))
        .join("wasm-policies");
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "sandman-cel-engine",
            "--manifest-path",
            "policies/Cargo.toml",
        ])
        .env("CARGO_TARGET_DIR", &target_dir);
    // The outer build's flags and wrappers (clippy, host-only RUSTFLAGS) are not for Wasm.
    for inherited in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cargo.env_remove(inherited);
    }
    let status = cargo
        .status()
        .expect("run cargo to build the CEL engine for wasm32-wasip2");
    assert!(
        status.success(),
        "building policies/cel-engine for wasm32-wasip2 failed (is the target installed? rustup target add wasm32-wasip2)"
    );
    let built = target_dir.join("wasm32-wasip2/release/sandman_cel_engine.wasm");
    std::fs::copy(&built, &dest).expect("copy the CEL engine into OUT_DIR");
}
