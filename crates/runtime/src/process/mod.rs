//! `process.Process`: start commands, follow their output, give them input and signals.

mod running;
mod table;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::http::{self as h, Body, RequestStream};
use crate::state::State;
pub use running::Running;
use sandman_connect::{self as connect, Code, RpcError};
pub use table::{Inherited, Table};
use wire::{Empty, Event, EventMessage};

pub async fn call(
    state: Arc<State>,
    method: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Response<Body> {
    match method {
        "Start" => match RequestStream::new(body).single().await {
            Ok(request) => start(state, headers, request),
            Err(e) => h::stream_error(&e),
        },
        "Connect" => match RequestStream::new(body)
            .single::<wire::SelectorRequest>()
            .await
        {
            Ok(request) => match state.processes.find(&request.process) {
                Ok(process) => {
                    let follower = process.follow();
                    stream(process, follower, headers, None)
                }
                Err(e) => h::stream_error(&e),
            },
            Err(e) => h::stream_error(&e),
        },
        "StreamInput" => stream_input(state, body).await,
        "List" => h::unary(Ok(wire::ListResponse {
            processes: state.processes.list().iter().map(|p| p.info()).collect(),
        })),
        "SendInput" => h::unary(send_input(&state, body).await),
        "SendSignal" => h::unary(send_signal(&state, body).await),
        "CloseStdin" => h::unary(close_stdin(&state, body).await),
        "Update" => h::unary(update(&state, body).await),
        other => h::unary::<Empty>(Err(RpcError::new(
            Code::Unimplemented,
            format!("process.Process/{other} is not a method"),
        ))),
    }
}

fn start(state: Arc<State>, headers: &HeaderMap, request: wire::StartRequest) -> Response<Body> {
    let named = crate::users::from_basic_auth(headers);
    let user = match crate::users::resolve(&state.user, named.as_deref()) {
        Ok(user) => user,
        Err(e) => return h::stream_error(&e),
    };
    let deadline = h::header_text(headers, "connect-timeout-ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let inherited = Inherited {
        env: &state.env,
        user: &user,
    };
    match state.processes.start(request, inherited) {
        Ok((process, follower)) => stream(process, follower, headers, deadline),
        Err(e) => h::stream_error(&e),
    }
}

/// Streams a process's events: `start` with its pid, its output as it comes, keepalives, and
/// `end`. A `deadline` kills the command's process group when it passes.
fn stream(
    process: Arc<Running>,
    mut follower: mpsc::Receiver<Event>,
    headers: &HeaderMap,
    deadline: Option<Duration>,
) -> Response<Body> {
    let keepalive = h::keepalive(headers);
    let (frames, receiver) = mpsc::channel::<Bytes>(h::STREAM_BUFFER);
    tokio::spawn(async move {
        let start = EventMessage {
            event: Event::Start { pid: process.pid },
        };
        if frames.send(connect::envelope(&start)).await.is_err() {
            return;
        }
        let expires = deadline.map(|d| tokio::time::Instant::now() + d);
        let mut timed_out = false;
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            let expiry = async {
                match expires {
                    Some(at) if !timed_out => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                event = follower.recv() => event,
                _ = ticks.tick() => Some(Event::Keepalive {}),
                () = expiry => {
                    timed_out = true;
                    kill_group(process.pid, rustix::process::Signal::KILL);
                    continue;
                }
            };
            let Some(event) = event else { break };
            let last = matches!(event, Event::End(_));
            if frames
                .send(connect::envelope(&EventMessage { event }))
                .await
                .is_err()
            {
                return;
            }
            if last {
                break;
            }
        }
        let error = timed_out.then(|| {
            RpcError::new(
                Code::DeadlineExceeded,
                format!("the command ran past its timeout of {deadline:?} and was killed"),
            )
        });
        let _ = frames.send(connect::end_of_stream(error.as_ref())).await;
    });
    h::streaming("application/connect+json", receiver)
}

fn kill_group(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // The command leads its own process group (a PTY's session, or `process_group(0)`),
        // so this reaches what it started too.
        if rustix::process::kill_process_group(pid, signal).is_err() {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

async fn send_input(state: &State, body: Incoming) -> Result<Empty, RpcError> {
    let request: wire::SendInputRequest = h::read_unary(body).await?;
    let process = state.processes.find(&request.process)?;
    process.write(&request.input.bytes()).await?;
    Ok(Empty {})
}

async fn send_signal(state: &State, body: Incoming) -> Result<Empty, RpcError> {
    let request: wire::SendSignalRequest = h::read_unary(body).await?;
    let process = state.processes.find(&request.process)?;
    let signal = match &request.signal {
        serde_json::Value::String(s) if s == "SIGNAL_SIGKILL" => rustix::process::Signal::KILL,
        serde_json::Value::Number(n) if n.as_u64() == Some(9) => rustix::process::Signal::KILL,
        serde_json::Value::String(s) if s == "SIGNAL_SIGTERM" => rustix::process::Signal::TERM,
        serde_json::Value::Number(n) if n.as_u64() == Some(15) => rustix::process::Signal::TERM,
        other => {
            return Err(RpcError::new(
                Code::InvalidArgument,
                format!("signal {other} is not SIGNAL_SIGTERM or SIGNAL_SIGKILL"),
            ));
        }
    };
    if let Some(pid) = i32::try_from(process.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        rustix::process::kill_process(pid, signal)
            .map_err(|e| RpcError::new(Code::Internal, format!("signal: {e}")))?;
    }
    Ok(Empty {})
}

async fn close_stdin(state: &State, body: Incoming) -> Result<Empty, RpcError> {
    let request: wire::SelectorRequest = h::read_unary(body).await?;
    state.processes.find(&request.process)?.close_input().await;
    Ok(Empty {})
}

async fn update(state: &State, body: Incoming) -> Result<Empty, RpcError> {
    let request: wire::UpdateRequest = h::read_unary(body).await?;
    let process = state.processes.find(&request.process)?;
    if let Some(pty) = request.pty {
        process.resize(pty.size).await?;
    }
    Ok(Empty {})
}

/// `StreamInput`: a `start` naming the process, then input as it comes.
async fn stream_input(state: Arc<State>, body: Incoming) -> Response<Body> {
    let mut requests = RequestStream::new(body);
    let result = async {
        let mut process = None;
        while let Some(message) = requests.next::<wire::StreamInputRequest>().await? {
            if let Some(start) = message.start {
                process = Some(state.processes.find(&start.process)?);
            } else if let Some(data) = message.data {
                let Some(process) = &process else {
                    return Err(RpcError::new(
                        Code::FailedPrecondition,
                        "input came before the start message that names its process",
                    ));
                };
                process.write(&data.input.bytes()).await?;
            }
        }
        Ok::<_, RpcError>(())
    }
    .await;
    let mut body = match &result {
        Ok(()) => connect::envelope(&Empty {}).to_vec(),
        Err(_) => Vec::new(),
    };
    body.extend_from_slice(&connect::end_of_stream(result.err().as_ref()));
    h::full(http::StatusCode::OK, "application/connect+json", body)
}
