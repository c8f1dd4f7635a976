//! The E2B Python SDK (`e2b` from PyPI, pinned), unmodified, drives the runtime: commands,
//! stdin, background commands, files, watches and a PTY (`e2b_sdk.py`). The SDK is installed
//! into a venv in the build directory on first use.

#![allow(clippy::unwrap_used, clippy::zombie_processes)]

use std::path::PathBuf;
use std::process::Command;

/// The SDK release the test pins (ANCHORS.md §6 read its source).
const E2B_VERSION: &str = "2.63.0";

fn venv() -> PathBuf {
    let root = sandman_testenv::harness::repo_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let venv = target.join("polyglot").join(format!("e2b-{E2B_VERSION}"));
    if !venv.join("bin/python").exists() || !venv.join(".installed").exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv (the E2B SDK test needs Python 3 with venv)");
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", &format!("e2b=={E2B_VERSION}")])
            .status()
            .expect("pip");
        assert!(installed.success(), "pip install e2b=={E2B_VERSION} failed");
        std::fs::write(venv.join(".installed"), E2B_VERSION).unwrap();
    }
    venv
}

#[test]
fn the_e2b_python_sdk_drives_the_runtime() {
    let venv = venv();
    let scratch = tempfile::tempdir().unwrap();
    let port = sandman_testenv::ports::free_loopback_port().unwrap();
    let token = format!("sdk-{port}");
    let mut runtime = Command::new(env!("CARGO_BIN_EXE_sandman-runtime"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SANDMAN_RUNTIME_TOKEN", &token)
        .env("HOME", scratch.path())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2b_sdk.py");
    let output = Command::new(venv.join("bin/python"))
        .arg(script)
        .args([&url, &token])
        .arg(scratch.path())
        .output()
        .unwrap();
    let _ = runtime.kill();
    let _ = runtime.wait();
    assert!(
        output.status.success(),
        "the SDK script failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}
