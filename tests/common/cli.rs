//! Running the `sandman` binary the way a user does, and reading what it says.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sandman_testenv::harness::repo_root;

pub fn sandman(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandman"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run sandman")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn describe(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sandman-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `sandman args…` run in `dir`.
pub fn sandman_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandman"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run sandman")
}

/// `sandman sandbox <args>` as a user runs it: the gateway's URL, and the Sandbox's token read
/// from its Secret with the test's kubeconfig.
pub async fn sandbox_command(
    gateway: &sandman::gateway::Gateway,
    ctx: &sandman_testenv::harness::TestContext,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandman"));
    command
        .arg("sandbox")
        .args(args)
        .env("SANDMAN_GATEWAY", format!("http://{}", gateway.addr))
        .env("KUBECONFIG", ctx.kubeconfig())
        .env_remove("SANDMAN_TOKEN")
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("run sandman");
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        pipe.write_all(bytes).await.expect("stdin");
    }
    child.wait_with_output().await.expect("sandman")
}
