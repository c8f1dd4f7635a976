//! A real agent under real gVisor, played as a Sandbox pod's container: the pod's supervisor
//! (`sandman::checkpoint::supervisor`, what `sandman supervise` runs) listens on the pod's IP,
//! with the pod's environment, and a temporary directory plays the Sandbox's volume, which
//! outlives each pod as a PVC would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sandman::api::{CheckpointMode, LifecycleSpec, OperatingMode, Phase, Sandbox};
use sandman::checkpoint::runsc::{Mount, Runsc};
use sandman::checkpoint::supervisor::{
    Forward, Options, Restore, Supervisor, default_bridge, pod_env,
};
use sandman::checkpoint::{SANDBOX_UID_ENV, SUPERVISOR_PORT, SUSPENSIONS_ENV};
use sandman_testenv::harness::{TestContext, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{WAIT, pods, sandbox, sandboxes};

/// The agent's port inside its sandbox, and the pod port forwarded to it.
pub const PORT: u16 = 8080;

/// The agent: an open file on the volume, a counter in memory, a listening socket. Each
/// connection gets the next number; a restored agent goes on counting, a fresh one starts at 1.
pub const AGENT: &str = "exec 3>>/workspace/agent.log; i=0; \
    while true; do i=$((i+1)); echo \"request $i\" >&3; \
    printf 'HTTP/1.0 200 OK\\r\\n\\r\\ncount=%s\\n' $i | nc -l -p 8080 >/dev/null; done";

/// runsc and a static busybox must be installed (`.ci/run` installs Debian's `runsc` and
/// `busybox-static`), and the tests run as root, as runsc needs. Anything else fails loudly.
pub fn require_gvisor() {
    let runsc = std::process::Command::new("runsc")
        .arg("--version")
        .output();
    assert!(
        runsc.is_ok_and(|o| o.status.success()),
        "runsc (gVisor) is not installed: `apt-get install runsc` (the checkpoint tests run the real thing)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "a static busybox is needed for the agent's root file system: `apt-get install busybox-static`"
    );
    assert!(
        rustix_is_root(),
        "runsc needs root: the checkpoint tests run as root"
    );
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// What a test's agents share: the root file system and the volume, both temporary.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        require_gvisor();
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("rootfs");
        std::fs::create_dir_all(dir.path().join("volume")).expect("volume");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox");
        for applet in ["sh", "nc", "sleep", "cat", "echo", "dd", "head"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet");
        }
        Self { dir }
    }

    pub fn volume(&self) -> PathBuf {
        self.dir.path().join("volume")
    }

    /// Where the supervisor keeps images: on the volume.
    pub fn images(&self) -> PathBuf {
        self.volume().join(".sandman/checkpoints")
    }

    pub fn image_names(&self) -> Vec<String> {
        sandman::checkpoint::image::Store::new(self.images()).names()
    }
}

/// A Sandbox whose agent is checkpointed on suspend, with a volume and port 8080.
pub fn checkpointed(name: &str) -> Sandbox {
    let mut sandbox = sandbox(name, true);
    sandbox.spec.lifecycle = Some(LifecycleSpec {
        checkpoint: Some(CheckpointMode::OnSuspend),
        ..LifecycleSpec::default()
    });
    sandbox
}

/// The running pod of Sandbox `name`: once the Sandbox runs and the pod has an IP.
pub async fn running_pod(ctx: &TestContext, name: &str) -> (Pod, String) {
    let api = sandboxes(ctx);
    let pods = pods(ctx);
    eventually(&format!("{name} to run with a pod IP"), WAIT, || {
        let api = api.clone();
        let pods = pods.clone();
        async move {
            let status = api.get(name).await.ok()?.status?;
            if status.phase != Some(Phase::Running) {
                return None;
            }
            let pod = pods.get_opt(name).await.ok()??;
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            Some((pod, ip))
        }
    })
    .await
}

/// The Sandbox's container, played: its supervisor on the pod's IP, started from the pod's
/// environment (restoring when the operator said so), the volume at `/workspace`.
pub struct Played {
    pub supervisor: Supervisor,
    pub ip: String,
    pub pod: Pod,
}

pub async fn play(ctx: &TestContext, workspace: &Workspace, name: &str) -> Played {
    let (pod, ip) = running_pod(ctx, name).await;
    let mut options = agent_options(workspace, &ip);
    options.restore = Restore::asked_by(&pod);
    options.sandbox_uid = pod_env(&pod, SANDBOX_UID_ENV).unwrap_or_default();
    options.token = supervisor_token(ctx, &pod).await;
    options.suspensions = pod_env(&pod, SUSPENSIONS_ENV)
        .map(|n| n.parse().expect("a number of suspensions"))
        .unwrap_or(0);
    let supervisor = Supervisor::start(options)
        .await
        .expect("the supervisor starts");
    Played {
        supervisor,
        ip,
        pod,
    }
}

/// A supervisor of the test's agent on `ip`, with the workspace's root file system and
/// volume, told nothing by an operator yet.
pub fn agent_options(workspace: &Workspace, ip: &str) -> Options {
    let runsc_root = tempfile::Builder::new()
        .prefix("runsc-")
        .tempdir_in(workspace.dir.path())
        .expect("runsc root")
        .keep();
    Options {
        runsc: Runsc {
            binary: "runsc".into(),
            root: runsc_root,
            platform: "ptrace".into(),
            checkpoint_flags: Vec::new(),
            restore_flags: Vec::new(),
        },
        rootfs: workspace.dir.path().join("rootfs"),
        args: vec!["/bin/sh".into(), "-c".into(), AGENT.into()],
        env: Vec::new(),
        mounts: vec![Mount {
            source: workspace.volume(),
            destination: "/workspace".into(),
        }],
        images: workspace.images(),
        control: format!("{ip}:{SUPERVISOR_PORT}").parse().expect("address"),
        forwards: vec![Forward {
            listen: format!("{ip}:{PORT}").parse().expect("address"),
            port: PORT,
        }],
        bridge: default_bridge(),
        restore: None,
        sandbox_uid: String::new(),
        token: String::new(),
        suspensions: 0,
        checkpoint_timeout: Duration::from_secs(60),
        restore_timeout: Duration::from_secs(60),
    }
}

/// One request to a supervisor's control port at `address`, as anyone in the cluster could
/// send it: its status code and body.
pub async fn control_request(
    address: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the supervisor");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(authorization) = authorization {
        head.push_str(&format!("authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, answer)
}

/// The token the pod's first container gets from its Secret, as the kubelet would resolve it.
pub async fn supervisor_token(ctx: &TestContext, pod: &Pod) -> String {
    let reference = sandman::checkpoint::supervisor::token_reference(pod)
        .expect("the pod gets the supervisor's token from a Secret");
    let secret = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        ctx.client.clone(),
        &ctx.namespace,
    )
    .get(&reference.name)
    .await
    .expect("the token Secret");
    let bytes = secret
        .data
        .and_then(|d| d.get(&reference.key).cloned())
        .expect("the token");
    String::from_utf8(bytes.0).expect("a text token")
}

/// The agent's count for one request through `address`, over plain TCP.
pub async fn count_at(address: &str) -> u64 {
    eventually(
        &format!("the agent to answer at {address}"),
        WAIT,
        || async {
            let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
            let mut body = String::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
                .await
                .ok()?
                .ok()?;
            parse_count(&body)
        },
    )
    .await
}

pub fn parse_count(body: &str) -> Option<u64> {
    body.split("count=").nth(1)?.trim().parse().ok()
}

impl Played {
    pub async fn count(&self) -> u64 {
        count_at(&format!("{}:{PORT}", self.ip)).await
    }
}

/// Sets the Sandbox's mode and waits until it shows.
pub async fn set_mode(ctx: &TestContext, name: &str, mode: OperatingMode) {
    sandboxes(ctx)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "spec": { "operatingMode": mode } })),
        )
        .await
        .expect("set the mode");
}

/// The notes of Events of `reason` on the Sandbox, once there is at least one.
pub async fn event_notes(ctx: &TestContext, reason: &str) -> Vec<String> {
    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(
        ctx.client.clone(),
        &ctx.namespace,
    );
    eventually(&format!("a {reason} Event"), WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            let notes: Vec<String> = list
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note)
                .collect();
            (!notes.is_empty()).then_some(notes)
        }
    })
    .await
}
