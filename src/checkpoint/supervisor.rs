//! The in-pod supervisor (`sandman supervise`): runs the agent under `runsc`, restored from
//! the image the operator named when there is a valid one and started afresh otherwise, and
//! checkpoints it to the Sandbox's volume when the operator asks before deleting the pod.
//!
//! It serves the operator on [`super::SUPERVISOR_PORT`] (`GET /status`, `POST /checkpoint`),
//! answering only requests signed with the Sandbox's own token ([`super::signed`]), and
//! forwards each of the agent's ports from the pod into the sandbox: the agent listens on
//! gVisor's own loopback (which a checkpoint keeps, listening sockets included), and each
//! connection is bridged by a command run inside the sandbox (`nc` by default).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use sandman_oci_bundle::ContainerState;

use super::image::Store;
use super::runsc::{Mount, Runsc};
use super::signed::{self, Unsigned};
use super::{CheckpointError, CheckpointRecord, CheckpointRequest, StartKind, StartReport};
use crate::listener::{Accepted, Bounded};

/// The largest request body the control port reads.
const MAX_REQUEST_BYTES: usize = 64 << 10;
/// How long a control connection may take to send its request head, and then its body: a
/// peer that trickles bytes holds a slot no longer than this.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one bridged connection may stay open, and how long it may carry nothing: each
/// holds a `runsc exec` inside the agent's sandbox.
const BRIDGE_LIFE: Duration = Duration::from_secs(3600);
const BRIDGE_IDLE: Duration = Duration::from_secs(300);

/// What to restore, as the operator put it in the pod's environment, with its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub image: String,
    pub sha256: String,
    /// The operator's [`signed::restore_signature`]; a restore without a good one is refused.
    pub signature: String,
}

impl Restore {
    /// What the operator asked `pod` to restore, from its environment (for whoever plays a
    /// pod's container from the pod object, as tests and benchmarks do).
    pub fn asked_by(pod: &k8s_openapi::api::core::v1::Pod) -> Option<Self> {
        Some(Self {
            image: pod_env(pod, super::RESTORE_IMAGE_ENV)?,
            sha256: pod_env(pod, super::RESTORE_SHA256_ENV)?,
            signature: pod_env(pod, super::RESTORE_SIGNATURE_ENV).unwrap_or_default(),
        })
    }
}

/// The variable `name` in the environment of `pod`'s first container.
fn first_container_var<'a>(
    pod: &'a k8s_openapi::api::core::v1::Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
}

/// The value of `name` in the environment of `pod`'s first container.
pub fn pod_env(pod: &k8s_openapi::api::core::v1::Pod, name: &str) -> Option<String> {
    first_container_var(pod, name)?.value.clone()
}

/// The Secret key the operator gives `pod`'s first container its token from (for whoever
/// plays a pod's container from the pod object, as a kubelet would resolve it).
pub fn token_reference(
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Option<k8s_openapi::api::core::v1::SecretKeySelector> {
    first_container_var(pod, signed::TOKEN_ENV)?
        .value_from
        .as_ref()?
        .secret_key_ref
        .clone()
}

/// A port of the pod forwarded to a port of the agent inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub runsc: Runsc,
    /// The agent's root file system.
    pub rootfs: PathBuf,
    /// The agent's command.
    pub args: Vec<String>,
    /// `NAME=value` pairs for the agent.
    pub env: Vec<String>,
    /// The agent's working directory.
    pub cwd: String,
    /// The Sandbox's volumes, bound into the agent's container.
    pub mounts: Vec<Mount>,
    /// Where images go: a directory on the Sandbox's volume.
    pub images: PathBuf,
    /// The control port's address.
    pub control: SocketAddr,
    pub forwards: Vec<Forward>,
    /// The command, run inside the sandbox, that connects to a port there: `{port}` is
    /// replaced. Its stdin and stdout carry the connection.
    pub bridge: Vec<String>,
    pub restore: Option<Restore>,
    pub sandbox_uid: String,
    /// The Sandbox's own token: requests and restores signed with anything else are refused,
    /// and a supervisor given none refuses them all.
    pub token: String,
    /// How many suspensions the Sandbox had when this pod was made: requests for those are
    /// old ones.
    pub suspensions: u64,
    /// The longest a checkpoint may take, whatever a request asks.
    pub checkpoint_timeout: Duration,
    pub restore_timeout: Duration,
}

/// The default bridge: busybox's `sh`, `nc` and `sleep` inside the agent's image. It tries
/// again for up to 5 s while the port refuses: a listener a restore brings back, or one
/// between two accepts, is not there for a moment. A refused `nc` has not read its stdin, so
/// the client's bytes wait in the pipe for the next try.
pub fn default_bridge() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        "i=0; while [ $i -lt 100 ]; do nc 127.0.0.1 {port} && exit 0; i=$((i+1)); sleep 0.05; done; exit 1"
            .into(),
    ]
}

struct State {
    runsc: Runsc,
    store: Store,
    id: String,
    start: StartReport,
    bridge: Vec<String>,
    token: String,
    sandbox_uid: String,
    suspensions: u64,
    checkpoint_timeout: Duration,
    /// One checkpoint at a time; the last one taken, so that asking again for the same
    /// suspension returns it.
    last: Mutex<Option<CheckpointRecord>>,
    /// One permit per bridge process, held until it is gone (the listeners' own slots are
    /// held while they wait to accept, so they cannot say this).
    live_bridges: Arc<tokio::sync::Semaphore>,
    /// Set when a checkpoint begins: each bridge ends, and no new one starts, so that no
    /// process with the pod's pipes is inside the sandbox when it is saved.
    checkpointing: tokio::sync::watch::Sender<bool>,
}

/// A running supervisor. Dropping it removes the agent's container.
pub struct Supervisor {
    state: Arc<State>,
    pub control: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the agent in container `bundle`: from the checkpoint the options name, when it
/// verifies and restores, else afresh. Returns the container's id and how it started.
async fn start_agent(
    runsc: &Runsc,
    store: &Store,
    bundle: &Path,
    log: &Path,
    options: &Options,
) -> Result<(String, StartReport), CheckpointError> {
    let began = Instant::now();
    let fresh_id = |n: u32| {
        format!(
            "agent-{}-{}-{n}",
            std::process::id(),
            Timestamp::now().as_millisecond()
        )
    };
    let mut id = fresh_id(0);
    let mut refused: Option<(String, String)> = None;
    if let Some(restore) = &options.restore {
        let signed = signed::check_restore(
            &options.token,
            &options.sandbox_uid,
            &restore.image,
            &restore.sha256,
            &restore.signature,
        );
        match signed
            .map_err(|e| format!("not restored on the operator's word: {e}"))
            .and_then(|()| {
                let verified = store
                    .verify(&restore.image, &restore.sha256, &options.sandbox_uid)
                    .map_err(|refusal| refusal.to_string());
                tracing::info!(
                    took_ms = millis(began.elapsed()),
                    ok = verified.is_ok(),
                    "image verified"
                );
                verified
            }) {
            Ok(image) => match runsc
                .restore(bundle, &id, &image.path(), log, options.restore_timeout)
                .await
            {
                Ok(()) => {
                    if let Err(e) = store.mark_restored(&restore.image) {
                        tracing::warn!(error = %e, "could not mark the image restored");
                    }
                    let restored = StartReport {
                        start: StartKind::Restored,
                        image: Some(restore.image.clone()),
                        reason: None,
                        at: Timestamp::now(),
                        took_ms: millis(began.elapsed()),
                    };
                    return Ok((id, restored));
                }
                Err(e) => {
                    runsc.remove(&id);
                    id = fresh_id(1);
                    refused = Some((restore.image.clone(), format!("restore failed: {e}")));
                }
            },
            Err(refusal) => {
                refused = Some((restore.image.clone(), refusal));
            }
        }
    }
    runsc.run(bundle, &id, log).await?;
    let (image, reason) = refused.unzip();
    let cold = StartReport {
        start: StartKind::ColdStart,
        image,
        reason,
        at: Timestamp::now(),
        took_ms: millis(began.elapsed()),
    };
    Ok((id, cold))
}

impl Supervisor {
    /// Starts the agent (restored, or afresh) and the control and forwarded ports.
    pub async fn start(options: Options) -> Result<Self, CheckpointError> {
        let runsc = options.runsc.clone();
        std::fs::create_dir_all(&runsc.root).map_err(CheckpointError::io(format!(
            "create {}",
            runsc.root.display()
        )))?;
        let bundle = runsc.root.join("bundle");
        let rootfs = super::agent_root::prepare(&options.rootfs, &runsc.root)?;
        super::runsc::write_bundle(
            &bundle,
            &rootfs,
            &options.args,
            &options.env,
            &options.cwd,
            &options.mounts,
        )?;
        let log = runsc.root.join("agent.log");
        let store = Store::new(&options.images);
        let control = TcpListener::bind(options.control)
            .await
            .map_err(CheckpointError::io(format!(
                "listen on {}",
                options.control
            )))?;
        let mut forwards = Vec::new();
        for forward in &options.forwards {
            let listener = TcpListener::bind(forward.listen)
                .await
                .map_err(CheckpointError::io(format!("listen on {}", forward.listen)))?;
            forwards.push((listener, forward.port));
        }

        let (id, start) = start_agent(&runsc, &store, &bundle, &log, &options).await?;
        tracing::info!(start = ?start.start, image = ?start.image, reason = ?start.reason, took_ms = start.took_ms, "agent started");
        let state = Arc::new(State {
            runsc,
            store,
            id,
            start,
            bridge: options.bridge.clone(),
            token: options.token.clone(),
            sandbox_uid: options.sandbox_uid.clone(),
            suspensions: options.suspensions,
            checkpoint_timeout: options.checkpoint_timeout,
            last: Mutex::new(None),
            live_bridges: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDED_CONNECTIONS)),
            checkpointing: tokio::sync::watch::Sender::new(false),
        });
        let control_addr = control
            .local_addr()
            .map_err(CheckpointError::io("control address"))?;
        let mut tasks = vec![tokio::spawn(serve_control(control, state.clone()))];
        let bridges = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDED_CONNECTIONS));
        for (listener, port) in forwards {
            let listener = Bounded::sharing(listener, bridges.clone());
            tasks.push(tokio::spawn(forward(listener, port, state.clone())));
        }
        Ok(Self {
            state,
            control: control_addr,
            tasks,
        })
    }

    pub fn start_report(&self) -> &StartReport {
        &self.state.start
    }

    /// Whether the agent stopped without being checkpointed: then the pod should end too.
    pub async fn agent_exited(&self) -> bool {
        if self.state.last.lock().await.is_some() {
            return false;
        }
        matches!(
            self.state.runsc.status(&self.state.id).await,
            Ok(ContainerState::Stopped)
        )
    }

    /// The agent container's id (for tests that stop it behind the supervisor's back).
    pub fn container_id(&self) -> &str {
        &self.state.id
    }

    /// runsc's state directory for the agent.
    pub fn runsc_root(&self) -> &std::path::Path {
        &self.state.runsc.root
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.state.runsc.remove(&self.state.id);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How many connections the control port serves at once, and the forwarded ports all
/// together (each forwarded one is a `runsc exec`).
const MAX_CONTROL_CONNECTIONS: usize = 16;
const MAX_FORWARDED_CONNECTIONS: usize = 32;

async fn serve_control(listener: TcpListener, state: Arc<State>) {
    let listener = Bounded::new(listener, MAX_CONTROL_CONNECTIONS);
    loop {
        let Accepted { stream, slot, .. } = listener.accept().await;
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(control(request, &state).await) }
            });
            // One request per connection: a kept-alive connection would outlive this
            // supervisor's pod, and a later pod with the same IP would be answered by it.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

async fn control(request: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let (head, body) = request.into_parts();
    let body = match tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        Limited::new(body, MAX_REQUEST_BYTES).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("read body: {e}")),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the body came too slowly".into(),
            );
        }
    };
    let authorization = head
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let path = head.uri.path();
    if let Err(unsigned) = signed::check_request(
        &state.token,
        head.method.as_str(),
        path,
        &body,
        authorization,
    ) {
        return refuse(&unsigned);
    }
    match (&head.method, path) {
        (&Method::GET, "/status") => json(StatusCode::OK, &state.start),
        (&Method::POST, "/checkpoint") => {
            let asked: CheckpointRequest = match serde_json::from_slice(&body) {
                Ok(asked) => asked,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("request: {e}")),
            };
            if let Err(why) = bound(state, &asked) {
                return error(StatusCode::UNAUTHORIZED, why);
            }
            match checkpoint(state, &asked).await {
                Ok(record) => json(StatusCode::OK, &record),
                Err(e @ CheckpointError::NotRunning(_)) => {
                    error(StatusCode::CONFLICT, e.to_string())
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such route".into()),
    }
}

fn refuse(unsigned: &Unsigned) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::UNAUTHORIZED, unsigned.to_string());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static(signed::SCHEME),
    );
    response
}

/// A signed request is still refused when it is for another Sandbox, or for a suspension that
/// came before this pod (an old request, replayed).
fn bound(state: &State, asked: &CheckpointRequest) -> Result<(), String> {
    if asked.sandbox_uid != state.sandbox_uid {
        return Err(format!(
            "the request is for Sandbox {}, and this pod is Sandbox {}'s",
            crate::text::clip(crate::text::one_line(&asked.sandbox_uid), 64),
            state.sandbox_uid
        ));
    }
    if asked.suspension <= state.suspensions {
        return Err(format!(
            "the request is for suspension {}, and this pod was made after suspension {}",
            asked.suspension, state.suspensions
        ));
    }
    Ok(())
}

async fn checkpoint(
    state: &State,
    asked: &CheckpointRequest,
) -> Result<CheckpointRecord, CheckpointError> {
    let mut last = state.last.lock().await;
    if let Some(record) = last.as_ref() {
        if record.suspension == asked.suspension && record.sandbox_uid == asked.sandbox_uid {
            return Ok(record.clone());
        }
        return Err(CheckpointError::NotRunning(format!(
            "was checkpointed already, as {}",
            record.image
        )));
    }
    let status = state.runsc.status(&state.id).await?;
    if status != ContainerState::Running {
        return Err(CheckpointError::NotRunning(status.to_string()));
    }
    end_bridges(state).await;
    let (name, image) = state.store.create(asked.suspension)?;
    let began = Instant::now();
    let timeout = asked
        .timeout_seconds
        .map(Duration::from_secs)
        .map_or(state.checkpoint_timeout, |t| {
            t.min(state.checkpoint_timeout)
        });
    // runsc is handed the directory held open, not its name on the agent's volume.
    if let Err(e) = state
        .runsc
        .checkpoint(&state.id, &image.path(), timeout)
        .await
    {
        state.store.discard(&name);
        return Err(e);
    }
    let took_ms = millis(began.elapsed());
    let digest = {
        let held = image
            .try_clone()
            .map_err(CheckpointError::io(format!("hold image {name}")))?;
        tokio::task::spawn_blocking(move || super::digest::digest(&held))
            .await
            .map_err(|e| CheckpointError::Invalid(format!("digest: {e}")))?
    };
    let (sha256, size_bytes) = match digest {
        Ok(d) => d,
        Err(e) => {
            state.store.discard(&name);
            return Err(CheckpointError::Io(format!("digest image {name}"), e));
        }
    };
    let record = CheckpointRecord {
        image: name,
        sha256,
        size_bytes,
        taken_at: Timestamp::now(),
        sandbox_uid: asked.sandbox_uid.clone(),
        pod: asked.pod.clone(),
        suspension: asked.suspension,
        took_ms,
    };
    state.store.seal(&image, &record)?;
    let pruned = state.store.prune(asked.keep)?;
    tracing::info!(image = %record.image, size = record.size_bytes, took_ms, ?pruned, "checkpointed");
    *last = Some(record.clone());
    Ok(record)
}

async fn forward(listener: Bounded, port: u16, state: Arc<State>) {
    // Connections wait in the listener's backlog until the agent listens: right after a
    // restore (or a start) its server may not be accepting yet, and a bridged connection that
    // meets a closed port inside would be lost.
    wait_until_listening(&state, port).await;
    loop {
        let Accepted { stream, slot, .. } = listener.accept().await;
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = bridge(stream, port, &state).await {
                tracing::debug!(error = %e, port, "bridged connection ended");
            }
        });
    }
}

/// How long a forwarded port waits for the agent to listen before it forwards anyway.
const LISTEN_WAIT: Duration = Duration::from_secs(60);

/// Waits until a socket inside the sandbox listens on `port`, as its `/proc/net/tcp` says
/// (read with `cat` inside; an image without it is not waited for).
async fn wait_until_listening(state: &State, port: u16) {
    let deadline = Instant::now() + LISTEN_WAIT;
    let wanted = format!(":{port:04X}");
    while Instant::now() < deadline {
        let args = ["cat", "/proc/net/tcp", "/proc/net/tcp6"].map(String::from);
        let mut command = state.runsc.exec(&state.id, &args);
        command.stdin(std::process::Stdio::null());
        let Ok(output) = command.output().await else {
            return;
        };
        let table = String::from_utf8_lossy(&output.stdout);
        if table.is_empty() && !output.status.success() {
            tracing::debug!(port, "cannot read the agent's sockets; forwarding at once");
            return;
        }
        let listening = table.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&wanted) && fields[3] == "0A"
        });
        if listening {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(port, "the agent does not listen; forwarding anyway");
}

/// How long a checkpoint waits for the bridges to go before it saves the sandbox anyway.
const BRIDGES_END_WITHIN: Duration = Duration::from_secs(5);

/// Ends every bridged connection and waits until their processes are gone: a bridge's pipes
/// lead out of the sandbox, and a keep-alive connection (the runtime's, through the gateway)
/// would otherwise be inside the saved image.
async fn end_bridges(state: &State) {
    state.checkpointing.send_replace(true);
    let all = u32::try_from(MAX_FORWARDED_CONNECTIONS).unwrap_or(u32::MAX);
    match tokio::time::timeout(BRIDGES_END_WITHIN, state.live_bridges.acquire_many(all)).await {
        Ok(_all_free) => {}
        Err(_) => tracing::warn!("bridged connections did not end before the checkpoint"),
    }
}

/// How long a forwarded connection may stay silent before it is bridged anyway. The clients
/// of what the gateway forwards (HTTP, WebSocket) speak first; a client of a protocol whose
/// server speaks first waits this long once per connection.
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(100);

/// One connection carried into the sandbox by the bridge command's stdin and stdout, until
/// either side ends it or a checkpoint begins.
async fn bridge(mut stream: TcpStream, port: u16, state: &State) -> std::io::Result<()> {
    // A connection that ends before its first byte (the gateway's check that a woken pod
    // accepts, a port scan) is not bridged: it would cost a `runsc exec`, and an agent that
    // serves one connection at a time would take it for a client and keep the real one
    // waiting (on 2026-12-04 that was up to 190 ms of a 300 ms wake). A client that
    // half-closes before it sends anything, and then waits for the server, is not served.
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_WAIT, stream.peek(&mut first)).await {
        Ok(Ok(0)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) | Err(_) => {}
    }
    let mut checkpointing = state.checkpointing.subscribe();
    // At most as many as the listeners admit, so this never waits.
    let _live = state.live_bridges.clone().acquire_owned().await;
    if *checkpointing.borrow() {
        return Err(std::io::Error::other("the agent is being checkpointed"));
    }
    let args: Vec<String> = state
        .bridge
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let mut child = state.runsc.exec(&state.id, &args).spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("bridge without stdio"));
    };
    let inside = tokio::io::join(stdout, stdin);
    let carried = tokio::select! {
        carried = super::carry::carry(&mut stream, inside, BRIDGE_IDLE, BRIDGE_LIFE) => Some(carried),
        _ = checkpointing.wait_for(|begun| *begun) => None,
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    match carried {
        None => Err(std::io::Error::other("ended for a checkpoint")),
        Some(carried) => match carried? {
            Ok(()) => Ok(()),
            Err(cut) => Err(std::io::Error::other(format!("bridge closed: {cut}"))),
        },
    }
}
