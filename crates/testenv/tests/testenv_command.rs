//! The `testenv` command and the test harness keep their promises about processes: a second
//! `up` does not start a second control plane, `down` stops what `up` started and nothing
//! else, and a test binary that panics takes its control plane with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sandman_testenv::{ControlPlane, Options, RunningState};

fn testenv(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testenv"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run testenv")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sandman-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until none of the recorded processes runs any more.
fn wait_all_gone(state: &RunningState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state.alive().is_empty() {
        assert!(
            Instant::now() < deadline,
            "still running: {:?}",
            state.alive()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn up_twice_says_so_and_down_stops_only_its_own() {
    let dir = scratch_dir("up-twice");
    let bystander = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("start a bystander");

    let first = testenv(&dir, &["up", "--nodes", "1"]);
    assert!(
        first.status.success(),
        "up failed: {}{}",
        stdout(&first),
        String::from_utf8_lossy(&first.stderr)
    );
    let state = RunningState::load(&dir)
        .expect("state")
        .expect("state file after up");
    assert_eq!(
        state.alive().len(),
        5,
        "etcd, apiserver, controller manager, scheduler, kwok"
    );

    let second = testenv(&dir, &["up"]);
    assert!(second.status.success());
    assert!(
        stdout(&second).contains("already running"),
        "{}",
        stdout(&second)
    );
    let again = RunningState::load(&dir)
        .expect("state")
        .expect("state file");
    let pids = |s: &RunningState| s.processes.iter().map(|p| p.pid).collect::<Vec<_>>();
    assert_eq!(pids(&again), pids(&state), "no second control plane");

    assert!(testenv(&dir, &["status"]).status.success());
    assert!(stdout(&testenv(&dir, &["kubeconfig"])).contains("admin.kubeconfig"));

    let down = testenv(&dir, &["down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    wait_all_gone(&state);
    assert_eq!(
        testenv(&dir, &["status"]).status.code(),
        Some(3),
        "not running"
    );
    let bystander_alive = Path::new(&format!("/proc/{}", bystander.id())).exists();
    let mut bystander = bystander;
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(bystander_alive, "down killed a process it did not start");
    let _ = std::fs::remove_dir_all(&dir);
}

const CHILD_DIR: &str = "SANDMAN_TESTENV_PANIC_DIR";

/// Not a test of its own: the body of `control_plane_dies_with_a_panicking_test`, which runs it
/// in a child process. Without the variable set it has nothing to do.
#[test]
fn helper_panics_while_holding_a_control_plane() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mut options = Options::new(PathBuf::from(dir));
    options.nodes = 1;
    let _plane = ControlPlane::start(&options).expect("start");
    panic!("a test fails while its control plane runs");
}

#[test]
fn control_plane_dies_with_a_panicking_test() {
    let dir = scratch_dir("panic");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_panics_while_holding_a_control_plane",
            "--nocapture",
        ])
        .env(CHILD_DIR, &dir)
        .output()
        .expect("run the panicking test");
    assert!(!child.status.success(), "the helper was meant to panic");
    let state = RunningState::load(&dir)
        .expect("state")
        .expect("the helper started a control plane");
    assert_eq!(state.processes.len(), 5);
    wait_all_gone(&state);
    let _ = std::fs::remove_dir_all(&dir);
}
