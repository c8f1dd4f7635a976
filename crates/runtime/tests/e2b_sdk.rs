//! The E2B Python SDK (`e2b` from PyPI, pinned), unmodified, drives the runtime: commands,
//! stdin, background commands, files, watches and a PTY (`e2b_sdk.py`). The SDK is installed
//! into a venv in the build directory on first use.

#![allow(clippy::unwrap_used, clippy::zombie_processes)]

use std::process::Command;

#[test]
fn the_e2b_python_sdk_drives_the_runtime() {
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
    let output = Command::new(sandman_testenv::clients::e2b_python())
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
