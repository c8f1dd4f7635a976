//! A test's own real node: real containers under runc or gVisor, run by this project's node
//! agent (`sandman_testenv::real_node`), with an operator in-process.

use std::sync::atomic::{AtomicUsize, Ordering};

use sandman::api::{OperatingMode, Sandbox};
use sandman_testenv::harness::{TestContext, eventually};
use sandman_testenv::real_node::RealNode;

use super::{Operator, WAIT, sandbox};

/// A test's own real node, its root file system, and the operator.
pub struct Node {
    pub ctx: TestContext,
    pub node: RealNode,
    _operator: Operator,
    pub dir: tempfile::TempDir,
}

pub async fn real_node(test: &str) -> Option<Node> {
    real_node_with(test, |_| {}).await
}

/// A real node for `test`, or `None` when `SANDMAN_REAL_NODES=skip` says, on purpose, that this
/// machine cannot run one: then the test says so loudly and proves nothing. Without that, a
/// machine that cannot run real containers fails the tests.
pub async fn real_node_with(
    test: &str,
    configure: impl FnOnce(&mut sandman::controller::Options),
) -> Option<Node> {
    if std::env::var("SANDMAN_REAL_NODES").as_deref() == Ok("skip") {
        eprintln!("SKIPPED {test}: SANDMAN_REAL_NODES=skip; no real container ran");
        return None;
    }
    super::agent::require_gvisor();
    let runc = std::process::Command::new("runc").arg("--version").output();
    assert!(
        runc.is_ok_and(|o| o.status.success()),
        "runc is not installed: `apt-get install runc` (the real-node tests run real containers)"
    );
    static INDEX: AtomicUsize = AtomicUsize::new(0);
    let ctx = TestContext::new(test).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox");
    for applet in [
        "sh",
        "cat",
        "echo",
        "sleep",
        "httpd",
        "dmesg",
        "grep",
        "ls",
        "mkdir",
        "date",
        "nc",
        "id",
        "stty",
        "tty",
        "true",
        "rm",
        "sha256sum",
        "head",
        "seq",
        "touch",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet");
    }
    // E2B's SDKs run commands with `/bin/bash -l -c`: Debian's static bash (bash-static).
    std::fs::copy("/bin/bash-static", bin.join("bash")).expect("bash (bash-static)");
    // Node names are per process: each test binary has its own control plane.
    let index = INDEX.fetch_add(1, Ordering::Relaxed);
    let node = RealNode::start(
        ctx.client.clone(),
        index,
        &dir.path().join("node"),
        &dir.path().join("rootfs"),
    )
    .await
    .expect("the real node starts");
    let operator = Operator::start_configured(&ctx, ctx.client.clone(), configure);
    Some(Node {
        ctx,
        node,
        _operator: operator,
        dir,
    })
}

/// A real node whose operator gives Sandboxes the in-Sandbox runtime: the runtime built from
/// this repository as a static binary, loaded onto the node as its image.
pub async fn real_node_with_runtime(test: &str) -> Option<Node> {
    if std::env::var("SANDMAN_REAL_NODES").as_deref() == Ok("skip") {
        eprintln!("SKIPPED {test}: SANDMAN_REAL_NODES=skip; no real container ran");
        return None;
    }
    let image = sandman_testenv::runtime_image::runtime_image();
    let env = real_node_with(test, |options| {
        options.runtime_image = Some(sandman_testenv::runtime_image::REFERENCE.into());
    })
    .await?;
    env.node
        .load_image(sandman_testenv::runtime_image::REFERENCE, image);
    Some(env)
}

impl Node {
    /// A Sandbox with a `workspace` volume whose container runs `script` on this node.
    pub fn sandbox(&self, name: &str, script: &str) -> Sandbox {
        let mut sandbox = sandbox(name, true);
        let spec = &mut sandbox.spec.pod_template.spec;
        let container = &mut spec.containers[0];
        container.image = Some("busybox".into());
        container.command = Some(vec!["/bin/sh".into(), "-c".into(), script.into()]);
        let scheduling = self.node.scheduling();
        spec.node_selector = serde_json::from_value(scheduling["nodeSelector"].clone()).ok();
        spec.tolerations = serde_json::from_value(scheduling["tolerations"].clone()).ok();
        sandbox
    }

    /// A file the Sandbox's container wrote on its volume, once it is there and not empty.
    pub async fn file(&self, sandbox: &str, file: &str) -> String {
        let path = self
            .node
            .volume_dir(&self.ctx.namespace, &format!("workspace-{sandbox}"))
            .join(file);
        eventually(&format!("{sandbox} to write {file}"), WAIT, || {
            let path = path.clone();
            async move {
                std::fs::read_to_string(&path)
                    .ok()
                    .filter(|s| !s.is_empty())
            }
        })
        .await
    }

    /// What the node's containers wrote to their logs, each under its bundle's name: for a
    /// failing assertion's message.
    pub fn container_logs(&self) -> String {
        let mut logs = String::new();
        let bundles = self.dir.path().join("node/bundles");
        for entry in std::fs::read_dir(&bundles).into_iter().flatten().flatten() {
            let log =
                std::fs::read_to_string(entry.path().join("container.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            logs.push_str(&format!(
                "--- {} ---\n",
                entry.file_name().to_string_lossy()
            ));
            for line in tail.into_iter().rev() {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        logs
    }

    pub async fn set_mode(&self, name: &str, mode: OperatingMode) {
        super::agent::set_mode(&self.ctx, name, mode).await;
    }
}

/// A real node whose operator makes supervisors from the supervisor image laid out for it, and
/// whose `busybox` image is the node's root file system (the agent's image); with `runtime`,
/// the operator also puts the in-Sandbox runtime into the pods that ask for it.
pub async fn node_that_checkpoints(test: &str, runtime: bool) -> Option<Node> {
    let env = real_node_with(test, |options| {
        options.supervisor_image = Some(sandman_testenv::supervisor_image::REFERENCE.into());
        if runtime {
            options.runtime_image = Some(sandman_testenv::runtime_image::REFERENCE.into());
        }
    })
    .await?;
    if runtime {
        env.node.load_image(
            sandman_testenv::runtime_image::REFERENCE,
            sandman_testenv::runtime_image::runtime_image(),
        );
    }
    let image = sandman_testenv::supervisor_image::supervisor_image(
        std::path::Path::new(env!("CARGO_BIN_EXE_sandman")),
        &env.dir.path().join("supervisor-image"),
    )
    .expect("the supervisor image");
    env.node
        .load_image(sandman_testenv::supervisor_image::REFERENCE, &image);
    env.node
        .load_image("busybox", &env.dir.path().join("rootfs"));
    Some(env)
}
