//! A real agent under real gVisor, played as a Sandbox pod's container: the pod's supervisor
//! (`sandman::checkpoint::supervisor`, what `sandman supervise` runs) listens on the pod's IP,
//! with the pod's environment, and a temporary directory plays the Sandbox's volume, which
//! outlives each pod as a PVC would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sandman::api::{CheckpointMode, LifecycleSpec, OperatingMode, Phase, Sandbox};
use sandman::checkpoint::SUPERVISOR_PORT;
use sandman::checkpoint::runsc::{Mount, Runsc};
use sandman::checkpoint::signed::TOKEN_ENV;
use sandman::checkpoint::supervisor::{Forward, Options, Supervisor, default_bridge};
use sandman::cli::supervise::OperatorsWord;
use sandman::controller::sandbox::supervisor::{AGENT_ROOT, RUNSC_BINARY};
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

/// The runsc the supervisor image carries: the pinned current one, which testenv builds.
pub fn runsc() -> PathBuf {
    sandman_testenv::runsc::runsc().expect("the pinned runsc (tools/runsc) builds")
}

/// runsc and a static busybox must be there (testenv builds the pinned runsc; `.ci/run`
/// installs `busybox-static`), and the tests run as root, as runsc needs. Anything else fails
/// loudly.
pub fn require_gvisor() {
    let runsc = std::process::Command::new(runsc())
        .arg("--version")
        .output();
    assert!(
        runsc.is_ok_and(|o| o.status.success()),
        "the pinned runsc does not run (the checkpoint tests run the real thing)"
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

/// The supervisor image the tests' operators are given; played, never pulled.
pub const SUPERVISOR_IMAGE: &str = "registry.local/sandman-supervisor@sha256:5a4d0b1e0c0f4e3a8b9c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a";

/// A Sandbox whose agent is checkpointed on suspend, with a volume and port 8080: an ordinary
/// pod template, which the operator turns into the supervisor's pod.
pub fn checkpointed(name: &str) -> Sandbox {
    let mut sandbox = sandbox(name, true);
    sandbox.spec.pod_template.spec.containers[0].command =
        Some(vec!["/bin/sh".into(), "-c".into(), AGENT.into()]);
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
    let options = pod_options(ctx, workspace, &pod, &ip).await;
    let supervisor = Supervisor::start(options)
        .await
        .expect("the supervisor starts");
    Played {
        supervisor,
        ip,
        pod,
    }
}

/// The supervisor the operator made in `pod`, started as a kubelet here would start it: its
/// command parsed as `sandman supervise` parses it, its environment (the token resolved from
/// its Secret), the agent's image volume played by the workspace's root file system, the
/// Sandbox's volume by the workspace's volume, and the pod's IP for its ports.
pub async fn pod_options(ctx: &TestContext, workspace: &Workspace, pod: &Pod, ip: &str) -> Options {
    let spec = pod.spec.as_ref().expect("a pod spec");
    let container = &spec.containers[0];
    assert_eq!(container.image.as_deref(), Some(SUPERVISOR_IMAGE));
    assert_eq!(
        spec.host_users,
        Some(false),
        "the supervisor's pod is user-namespaced"
    );
    use clap::Parser as _;
    let command = container.command.clone().expect("the supervisor's command");
    let sandman::cli::Command::Supervise(args) = sandman::cli::Cli::try_parse_from(&command)
        .expect("the operator's command parses")
        .command
    else {
        panic!("not `sandman supervise`: {command:?}");
    };
    let mut vars = std::collections::BTreeMap::new();
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            vars.insert(var.name.clone(), value.clone());
        }
    }
    vars.insert(TOKEN_ENV.into(), supervisor_token(ctx, pod).await);
    let word = OperatorsWord::from_vars(&vars).expect("the operator's word");
    let mut options = sandman::cli::supervise::options(args, word);
    assert_eq!(options.rootfs, Path::new(AGENT_ROOT));
    options.rootfs = workspace.dir.path().join("rootfs");
    let on_volume = |path: &Path| {
        let rest = path
            .strip_prefix("/workspace")
            .unwrap_or_else(|_| panic!("{} is not on the Sandbox's volume", path.display()));
        workspace.volume().join(rest)
    };
    options.images = on_volume(&options.images);
    for mount in &mut options.mounts {
        mount.source = on_volume(&mount.source);
    }
    let ip: std::net::IpAddr = ip.parse().expect("a pod IP");
    options.control.set_ip(ip);
    for forward in &mut options.forwards {
        forward.listen.set_ip(ip);
    }
    // The image's runsc is played by the pinned one, its emptyDir by a directory; the flags
    // (the platform among them) are the pod's.
    assert_eq!(options.runsc.binary, Path::new(RUNSC_BINARY));
    let played = agent_options(workspace, &ip.to_string()).runsc;
    options.runsc.binary = played.binary;
    options.runsc.root = played.root;
    options
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
            binary: runsc(),
            root: runsc_root,
            platform: "systrap".into(),
            checkpoint_flags: Vec::new(),
            restore_flags: Vec::new(),
        },
        rootfs: workspace.dir.path().join("rootfs"),
        args: vec!["/bin/sh".into(), "-c".into(), AGENT.into()],
        env: Vec::new(),
        cwd: "/".into(),
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
