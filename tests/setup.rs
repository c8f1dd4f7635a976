//! The README's commands set up what they need, and a prerequisite that cannot be had stops
//! them at once with one line that says which, before any build or control-plane log.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `hack/setup.sh`'s set-up for the tests, run as an unprivileged user (nobody).
fn setup_as_nobody() -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["bash", "-c", "source hack/setup.sh && setup_for_tests"])
        .current_dir(ROOT)
        .env("HOME", "/nonexistent")
        .env(
            "CARGO_TARGET_DIR",
            std::env::temp_dir().join("sandman-setup-test"),
        )
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn a_missing_prerequisite_is_one_clear_line_first() {
    if !nix_root() {
        eprintln!("SKIPPED: needs root to become another user; run as root, as CI does");
        return;
    }
    let out = setup_as_nobody();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "set-up went on without root: {stderr}"
    );
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("sandman setup: not root"),
        "the first line should say what is missing, got:\n{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, nothing after it:\n{stderr}"
    );
}

fn nix_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
