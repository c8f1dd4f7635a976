//! A real node beside the kwok nodes: a small node agent that registers a Node, keeps its
//! Lease, and runs every pod bound to it as a real container, under runc or gVisor (`runsc`)
//! as the pod's RuntimeClass says, with the pod's command, environment, volumes and security
//! context. It stands in for a kubelet where a kubelet cannot run pods yet (see
//! `docs/real-nodes.md`); what runs is real.
//!
//! Scope, on purpose: one container per pod, its image from those loaded on the node
//! ([`RealNode::load_image`]) or else the node's one local root file system (nothing can be
//! pulled here), a user namespace of the pod's own for `hostUsers: false` ([`users`]), a
//! network namespace per pod inside the node's own
//! namespace ([`network`]: pod IPs `10.244.<slot>.<n>`, in `POD_IP` too), volumes from the
//! pod's PVCs (a directory per claim on the node, kept across pods as a PV would be),
//! `emptyDir`, and the projected service-account token when the pod has one. The node is
//! tainted, so only pods that ask for it (see [`RealNode::scheduling`]) land on it.

mod bundle;
mod network;
mod registration;
mod serve;
mod users;

pub use serve::serve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::Error;
use network::{NodeNetwork, PodNetwork};
use sandman_oci_bundle::ContainerState;

/// The label and taint that mark a real node; pods that tolerate the taint and select the
/// label run there.
pub const REAL_NODE_LABEL: &str = "sandman.dev/real-node";

/// How often the node renews its Lease and reports Ready.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often containers are looked at (exited ones are restarted).
const CONTAINER_CHECK: Duration = Duration::from_secs(1);
/// The most a container gets between SIGTERM and SIGKILL.
const MAX_GRACE: Duration = Duration::from_secs(5);

/// The container runtimes a pod may ask for, by RuntimeClass handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Runc,
    Runsc,
}

impl Runtime {
    fn of_handler(handler: &str) -> Option<Self> {
        match handler {
            "runc" => Some(Self::Runc),
            "runsc" => Some(Self::Runsc),
            _ => None,
        }
    }

    fn command(self, root: &Path) -> tokio::process::Command {
        tokio::process::Command::from(self.blocking_command(root))
    }

    /// The runtime with the node's root and flags, for where blocking is meant (on drop).
    fn blocking_command(self, root: &Path) -> std::process::Command {
        let mut command = match self {
            Self::Runc => std::process::Command::new("runc"),
            // The pinned current runsc, which [`RealNode::start`] made sure of.
            Self::Runsc => std::process::Command::new(crate::runsc::cache_path()),
        };
        command.arg("--root").arg(root.join(self.name()));
        if self == Self::Runsc {
            command.args(RUNSC_FLAGS);
        }
        command.stdin(Stdio::null());
        command
    }

    fn name(self) -> &'static str {
        match self {
            Self::Runc => "runc",
            Self::Runsc => "runsc",
        }
    }
}

/// How the node runs gVisor (measured in `docs/real-nodes.md`): systrap, the platform the
/// supervisor uses too; `--network=host` is the network namespace runsc runs in, the pod's own.
const RUNSC_FLAGS: [&str; 2] = ["--platform=systrap", "--network=host"];

/// A container the node runs, for one pod.
#[derive(Debug, Clone)]
struct Running {
    pod: String,
    /// The pod's container this runs, by name (what pod status reports it as).
    container: String,
    id: String,
    runtime: Runtime,
    network: PodNetwork,
    restarts: i32,
    bundle: PathBuf,
}

struct Agent {
    client: Client,
    name: String,
    dir: PathBuf,
    rootfs: PathBuf,
    /// By pod UID.
    running: Mutex<HashMap<String, Running>>,
    network: NodeNetwork,
    /// The images loaded on the node, by reference: the root file system an `image` volume
    /// naming it mounts. Nothing is pulled here (no registry is reachable); images are loaded,
    /// as `kind load` does.
    images: std::sync::Mutex<HashMap<String, PathBuf>>,
    /// How many user namespaces the node has handed out.
    user_namespaces: std::sync::atomic::AtomicU32,
}

/// A real node, running until dropped; dropping it stops its containers and deletes the Node.
pub struct RealNode {
    pub name: String,
    agent: Arc<Agent>,
    tasks: Vec<JoinHandle<()>>,
}

impl RealNode {
    /// Registers node `real-node-<index>` and starts running its pods. `rootfs` is the root
    /// file system every container runs from (read-only).
    pub async fn start(
        client: Client,
        index: usize,
        dir: &Path,
        rootfs: &Path,
    ) -> Result<Self, Error> {
        let runc = std::process::Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !runc {
            return Err(Error::State(
                "a real node needs runc: apt-get install runc".into(),
            ));
        }
        // gVisor pods run on the pinned runsc, built on first use.
        let runsc = crate::runsc::runsc()?;
        let runs = std::process::Command::new(&runsc)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !runs {
            return Err(Error::State(format!(
                "the pinned runsc {} does not run",
                runsc.display()
            )));
        }
        let name = format!("real-node-{index}");
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let network = NodeNetwork::create()?;
        let agent = Arc::new(Agent {
            client: client.clone(),
            name: name.clone(),
            dir: dir.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            running: Mutex::default(),
            network,
            images: std::sync::Mutex::default(),
            user_namespaces: std::sync::atomic::AtomicU32::new(0),
        });
        registration::register(&agent).await?;
        let tasks = vec![
            tokio::spawn(registration::heartbeat(agent.clone())),
            tokio::spawn(watch_pods(agent.clone())),
            tokio::spawn(check_containers(agent.clone())),
        ];
        Ok(Self { name, agent, tasks })
    }

    /// Loads an image onto the node: `image` volumes that name `reference` mount `root`
    /// read-only, and a container whose image is `reference` runs from it.
    pub fn load_image(&self, reference: &str, root: &Path) {
        self.agent
            .images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reference.to_string(), root.to_path_buf());
    }

    /// What a pod needs to land on this node: its hostname to select (its volumes live here)
    /// and the taint to tolerate.
    pub fn scheduling(&self) -> serde_json::Value {
        serde_json::json!({
            "nodeSelector": { "kubernetes.io/hostname": self.name },
            "tolerations": [{ "key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule" }],
        })
    }

    /// The subnet its pods' addresses come from (`10.244.<slot>.0/24`).
    pub fn pod_subnet(&self) -> String {
        self.agent.network.subnet()
    }

    /// Its network namespace; each pod's is named after it (`<it>-p<n>`).
    pub fn network_namespace(&self) -> String {
        self.agent.network.namespace().to_string()
    }

    /// The node's directory for the PVC `claim` of `namespace` (what a PV would hold).
    pub fn volume_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        self.agent.dir.join("volumes").join(namespace).join(claim)
    }

    /// How many containers the node runs now for pod `namespace/name`.
    pub async fn containers_of(&self, namespace: &str, name: &str) -> usize {
        let wanted = format!("{namespace}/{name}");
        self.agent
            .running
            .lock()
            .await
            .values()
            .filter(|r| r.pod == wanted)
            .count()
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Blocking on purpose: containers must not outlive the test that started them. Each
        // runtime's own list, not the agent's map, which a task may hold locked this moment.
        // (Nor the runtime's root: runsc keeps `<id>_sandbox:<id>.state` there, not ids.)
        for runtime in [Runtime::Runc, Runtime::Runsc] {
            for id in listed_blocking(&self.agent.dir, runtime) {
                remove_blocking(&self.agent.dir, runtime, &id);
            }
        }
        // Not left to the agent's drop: its tasks, which hold it, end only when the runtime
        // next polls them.
        self.agent.network.remove();
    }
}

/// The ids of the containers `runtime` has under the node's root for it.
fn listed_blocking(dir: &Path, runtime: Runtime) -> Vec<String> {
    runtime
        .blocking_command(dir)
        .args(["list", "--quiet"])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// How a container is taken down once it may not run any longer: SIGKILL, then a forced
/// delete (which also clears one that stopped by itself). The node's one sequence for it, run
/// by [`remove`] and, on drop, by [`remove_blocking`].
fn removal(id: &str) -> [[&str; 3]; 2] {
    [["kill", id, "KILL"], ["delete", "--force", id]]
}

fn remove_blocking(dir: &Path, runtime: Runtime, id: &str) {
    for args in removal(id) {
        let _ = runtime
            .blocking_command(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn remove(agent: &Agent, container: &Running) {
    for args in removal(&container.id) {
        let _ = container
            .runtime
            .command(&agent.dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

/// Server-side apply with the node agent's one field manager.
async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("sandman-real-node").force(),
        &Patch::Apply(object),
    )
    .await
}

fn kube_err(what: &str) -> impl FnOnce(kube::Error) -> Error {
    let what = what.to_string();
    move |e| Error::Kube(format!("{what}: {e}"))
}

async fn watch_pods(agent: Arc<Agent>) {
    let pods: Api<Pod> = Api::all(agent.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", agent.name));
    let mut events = watcher(pods, config).boxed();
    while let Some(event) = events.next().await {
        let (pod, gone) = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => (pod, false),
            Ok(watcher::Event::Delete(pod)) => (pod, true),
            Ok(_) => continue,
            Err(e) => {
                eprintln!("real node {}: watch: {e}", agent.name);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let agent = agent.clone();
        // One pod at a time per event: a pod's start and stop never interleave.
        if let Err(e) = sync(&agent, &pod, gone).await {
            eprintln!("real node {}: pod {}: {e}", agent.name, pod.name_any());
        }
    }
}

async fn sync(agent: &Agent, pod: &Pod, gone: bool) -> Result<(), Error> {
    let uid = pod.uid().unwrap_or_default();
    if gone || pod.metadata.deletion_timestamp.is_some() {
        let stopped = agent.running.lock().await.remove(&uid);
        if let Some(container) = stopped {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(MAX_GRACE, |s| Duration::from_secs(s).min(MAX_GRACE));
            stop(agent, &container, grace).await;
            agent.network.detach(&container.network);
        }
        if !gone {
            // What the kubelet does once the containers are gone: the pod object goes.
            let pods: Api<Pod> =
                Api::namespaced(agent.client.clone(), &pod.namespace().unwrap_or_default());
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(&pod.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(kube_err("delete the pod")(e)),
            }
        }
        return Ok(());
    }
    let tracked = agent.running.lock().await.get(&uid).cloned();
    if let Some(running) = tracked {
        // Running already; a report that failed earlier is made again.
        let reported = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        return if reported {
            Ok(())
        } else {
            report_running(agent, pod, &running).await
        };
    }
    let network = match agent.network.attach() {
        Ok(network) => network,
        Err(message) => return report_failed(agent, pod, &message).await,
    };
    match start(agent, pod, &network).await {
        Ok(running) => {
            // Tracked before it is reported: should the report fail, the container is still
            // one the node stops when the pod goes.
            agent.running.lock().await.insert(uid, running.clone());
            report_running(agent, pod, &running).await
        }
        Err(message) => {
            agent.network.detach(&network);
            report_failed(agent, pod, &message).await
        }
    }
}

async fn runtime_of(agent: &Agent, pod: &Pod) -> Result<Runtime, String> {
    let Some(class) = pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone()) else {
        return Ok(Runtime::Runc);
    };
    let classes: Api<RuntimeClass> = Api::all(agent.client.clone());
    let handler = classes
        .get(&class)
        .await
        .map_err(|e| format!("RuntimeClass {class}: {e}"))?
        .handler;
    Runtime::of_handler(&handler)
        .ok_or_else(|| format!("RuntimeClass {class}: no runtime for handler {handler}"))
}

/// Starts the pod's (first) container; the message says why not.
async fn start(agent: &Agent, pod: &Pod, network: &PodNetwork) -> Result<Running, String> {
    let spec = pod.spec.as_ref().ok_or("a pod without a spec")?;
    let container = spec.containers.first().ok_or("a pod without containers")?;
    let runtime = runtime_of(agent, pod).await?;
    let namespace = pod.namespace().unwrap_or_default();
    let uid = pod.uid().unwrap_or_default();
    let id = format!(
        "{namespace}-{}-{}",
        pod.name_any(),
        uid.get(..8).unwrap_or(&uid)
    );
    let bundle = agent.dir.join("bundles").join(&id);
    let ids = (spec.host_users == Some(false)).then(|| users::range(agent));
    let mounts = bundle::volumes(agent, pod, container, &bundle, ids).await?;
    let env = bundle::environment(agent, pod, container).await?;
    let rootfs = container
        .image
        .as_ref()
        .and_then(|image| {
            agent
                .images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(image)
                .cloned()
        })
        .unwrap_or_else(|| agent.rootfs.clone());
    let mut written = bundle::container_bundle(pod, container, &rootfs, network, mounts, env)?;
    if ids.is_some() {
        // runc makes missing mount points as the container's root, which in a user namespace
        // is no one the image's directory lets write; the node makes them first, as a
        // container runtime's writable snapshot would let it.
        users::mount_points(&rootfs, &written.mounts)
            .map_err(|e| format!("mount points in {}: {e}", rootfs.display()))?;
    }
    written.user_namespace = ids;
    written.write(&bundle).map_err(|e| e.to_string())?;
    run(agent, runtime, &bundle, &id).await?;
    Ok(Running {
        pod: format!("{namespace}/{}", pod.name_any()),
        container: container.name.clone(),
        id,
        runtime,
        network: network.clone(),
        restarts: 0,
        bundle,
    })
}

async fn run(agent: &Agent, runtime: Runtime, bundle: &Path, id: &str) -> Result<(), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle.join("container.log"))
        .map_err(|e| format!("log: {e}"))?;
    let err = log.try_clone().map_err(|e| format!("log: {e}"))?;
    let status = runtime
        .command(&agent.dir)
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg("--detach")
        .arg(id)
        .stdout(log)
        .stderr(err)
        .status()
        .await
        .map_err(|e| format!("{}: {e}", runtime.name()))?;
    if status.success() {
        Ok(())
    } else {
        let log = std::fs::read_to_string(bundle.join("container.log")).unwrap_or_default();
        Err(format!(
            "{} run: {status}: {}",
            runtime.name(),
            log.lines().last().unwrap_or_default()
        ))
    }
}

/// Stops a container as a kubelet would: SIGTERM, up to `grace` to exit, then [`remove`].
async fn stop(agent: &Agent, container: &Running, grace: Duration) {
    let _ = container
        .runtime
        .command(&agent.dir)
        .args(["kill", &container.id, "TERM"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if state(agent, container).await != Some(ContainerState::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remove(agent, container).await;
}

async fn state(agent: &Agent, container: &Running) -> Option<ContainerState> {
    let output = container
        .runtime
        .command(&agent.dir)
        .args(["state", &container.id])
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    sandman_oci_bundle::status_of(&output.stdout)
}

/// Restarts containers that exited (restartPolicy Always, the default for Sandboxes), and
/// reports each restart in the pod's `restartCount`. The map is locked only to read or write
/// it, never across a runtime command: a pod's deletion must not wait for a restart.
async fn check_containers(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(CONTAINER_CHECK).await;
        let snapshot: Vec<(String, Running)> = agent
            .running
            .lock()
            .await
            .iter()
            .map(|(uid, r)| (uid.clone(), r.clone()))
            .collect();
        for (uid, container) in snapshot {
            if state(&agent, &container).await != Some(ContainerState::Stopped) {
                continue;
            }
            if let Err(e) = restart(&agent, &uid, &container).await {
                eprintln!("real node {}: pod {}: {e}", agent.name, container.pod);
            }
        }
    }
}

/// Restarts the stopped container of pod `uid`, unless a deletion took the pod meanwhile.
async fn restart(agent: &Agent, uid: &str, container: &Running) -> Result<(), Error> {
    // Stopped by a deletion meanwhile: not ours to restart.
    if !agent.running.lock().await.contains_key(uid) {
        return Ok(());
    }
    remove(agent, container).await;
    let restarted = run(agent, container.runtime, &container.bundle, &container.id)
        .await
        .is_ok();
    let counted = {
        let mut running = agent.running.lock().await;
        match running.get_mut(uid) {
            Some(entry) if restarted => {
                entry.restarts += 1;
                Some(entry.clone())
            }
            Some(_) => None,
            None => {
                drop(running);
                // The pod was deleted while its container started again: what started must
                // not outlive it.
                remove(agent, container).await;
                None
            }
        }
    };
    match counted {
        Some(entry) => report_restarts(agent, &entry).await,
        None => Ok(()),
    }
}

/// The container's restart count in its pod's status (merged by container name).
async fn report_restarts(agent: &Agent, running: &Running) -> Result<(), Error> {
    let (namespace, name) = running.pod.split_once('/').unwrap_or_default();
    let status = serde_json::json!({ "status": { "containerStatuses": [{
        "name": running.container, "restartCount": running.restarts,
        "state": { "running": { "startedAt": Timestamp::now().to_string() } },
    }] } });
    patch_pod_status(agent, namespace, name, Patch::Strategic(status)).await
}

async fn report_running(agent: &Agent, pod: &Pod, running: &Running) -> Result<(), Error> {
    let now = Timestamp::now().to_string();
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let condition = |type_: &str| serde_json::json!({ "type": type_, "status": "True", "lastTransitionTime": now });
    let status = serde_json::json!({ "status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": running.network.ip,
        "podIPs": [{ "ip": running.network.ip }],
        "startTime": now,
        "conditions": [condition("PodScheduled"), condition("Initialized"),
                       condition("ContainersReady"), condition("Ready")],
        "containerStatuses": [{
            "name": name, "ready": true, "started": true, "restartCount": running.restarts,
            "image": "local", "imageID": "local",
            "containerID": format!("{}://{}", running.runtime.name(), running.id),
            "state": { "running": { "startedAt": now } },
        }],
    }});
    patch_pod_status(
        agent,
        &namespace_of(pod),
        &pod.name_any(),
        Patch::Merge(status),
    )
    .await
}

fn namespace_of(pod: &Pod) -> String {
    pod.namespace().unwrap_or_default()
}

async fn report_failed(agent: &Agent, pod: &Pod, message: &str) -> Result<(), Error> {
    let status = serde_json::json!({ "status": {
        "phase": "Pending",
        "conditions": [{ "type": "Ready", "status": "False", "reason": "RunContainerError",
                         "message": message }],
    }});
    patch_pod_status(
        agent,
        &namespace_of(pod),
        &pod.name_any(),
        Patch::Merge(status),
    )
    .await
}

async fn patch_pod_status(
    agent: &Agent,
    namespace: &str,
    name: &str,
    status: Patch<serde_json::Value>,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(agent.client.clone(), namespace);
    match pods
        .patch_status(name, &PatchParams::default(), &status)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(kube_err("pod status")(e)),
    }
}
