//! `sandman gateway` on the local control plane. A test plays a Sandbox's container by serving
//! HTTP on the pod's IP (testenv hands out 127.1.x.y) once the pod runs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::gateway::*;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::ResourceExt;
use sandman::api::{OperatingMode, Phase, Sandbox};
use sandman::gateway::{self, Gateway, Options};
use sandman_testenv::file_server::FileServer;
use sandman_testenv::harness::{TestContext, eventually, stays};

/// `n` requests for `path` sent at once; their answers in order.
async fn at_once(
    gateway: &Arc<Gateway>,
    path: &str,
    n: usize,
) -> Vec<(u16, Option<String>, String)> {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let gateway = gateway.clone();
            let path = path.to_string();
            tokio::spawn(async move { get(&gateway, &path, None).await })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("request task"));
    }
    answers
}

/// A Sandbox reachable through the gateway, created Suspended.
async fn asleep(ctx: &TestContext, name: &str) {
    create(ctx, &reachable(name, OperatingMode::Suspended)).await;
    wait_phase(ctx, name, Phase::Suspended).await;
}

/// A suspended Sandbox `sleeper`, then a gateway (with `client` and `options`) that a request
/// wakes it through; returns the gateway once the request was served by the pod.
async fn wake_sleeper(ctx: &TestContext, client: kube::Client, options: Options) -> Gateway {
    asleep(ctx, "sleeper").await;
    let gateway = gateway::start(client, options).await.expect("gateway");
    let _container = play_container(ctx, "sleeper");
    let (status, _, body) = get(
        &gateway,
        &format!("/sandboxes/{}/sleeper/work", ctx.namespace),
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "hello from sleeper"));
    gateway
}

#[tokio::test]
async fn request_wakes_suspended_sandbox() {
    let ctx = TestContext::new("gateway_wakes").await;
    let _operator = Operator::start(&ctx);
    let gateway = wake_sleeper(&ctx, ctx.client.clone(), options(&ctx)).await;
    assert_eq!(gateway.wakes(), 1);
    let woken = sandboxes(&ctx).get("sleeper").await.expect("sandbox");
    assert_eq!(
        woken.spec.operating_mode,
        OperatingMode::Suspended,
        "the wake overrides the spec in status; the spec stays the user's"
    );
    assert_eq!(woken.effective_mode(), OperatingMode::Running);
    let held = woken
        .status
        .and_then(|s| s.mode_override)
        .expect("override");
    assert_eq!(held.by, "gateway");
}

#[tokio::test]
async fn gateway_wakes_as_its_own_least_privileged_account() {
    let ctx = TestContext::new("gateway_rbac").await;
    let _operator = Operator::start(&ctx);
    let chart = sandman_testenv::harness::repo_root().join("deploy/helm/sandman");
    let rendered = sandman_testenv::helm::render(&chart, &["--set", "gateway.enabled=true"])
        .expect("helm template");
    let as_gateway = acting_as(&ctx, &rendered, "sandman-gateway").await;
    let options = Options {
        activity_interval: Duration::from_secs(1),
        ..options(&ctx)
    };
    let _gateway = wake_sleeper(&ctx, as_gateway.clone(), options).await;
    // Its activity write goes through too.
    eventually("the gateway's activity write", WAIT, || async {
        let sandbox = sandboxes(&ctx).get("sleeper").await.ok()?;
        sandbox
            .annotations()
            .contains_key(sandman::activity::LAST_ACTIVITY)
            .then_some(())
    })
    .await;
    // Its patches may touch only the wake and activity annotations: RBAC cannot say so, its
    // admission policy does. (Dry runs: the policy may take a moment to be in force.)
    let as_gateway_sandboxes: kube::Api<Sandbox> =
        kube::Api::namespaced(as_gateway.clone(), &ctx.namespace);
    let dry_run = kube::api::PatchParams {
        dry_run: true,
        ..Default::default()
    };
    for (what, patch) in [
        (
            "the pod template",
            serde_json::json!({ "spec": { "podTemplate": { "spec": { "hostNetwork": true } } } }),
        ),
        (
            "the operating mode",
            // The spec stays Suspended through the wake (the resume is a status override):
            // writing Running would be a change.
            serde_json::json!({ "spec": { "operatingMode": "Running" } }),
        ),
        (
            "a label",
            serde_json::json!({ "metadata": { "labels": { "sandman.dev/trust": "trusted" } } }),
        ),
        (
            "another annotation",
            serde_json::json!({ "metadata": { "annotations": { "example.com/x": "y" } } }),
        ),
    ] {
        let api = as_gateway_sandboxes.clone();
        let dry_run = dry_run.clone();
        eventually(&format!("the gateway to be refused {what}"), WAIT, || {
            let api = api.clone();
            let dry_run = dry_run.clone();
            let patch = patch.clone();
            async move {
                match api
                    .patch("sleeper", &dry_run, &kube::api::Patch::Merge(patch))
                    .await
                {
                    Err(kube::Error::Api(e)) if e.code == 403 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
    }
    as_gateway_sandboxes
        .patch(
            "sleeper",
            &dry_run,
            &kube::api::Patch::Merge(serde_json::json!({ "metadata": { "annotations": {
                sandman::activity::LAST_ACTIVITY: "2026-01-01T00:00:00Z"
            } } })),
        )
        .await
        .expect("an activity write is allowed");
    // And it can do nothing else: no pods, no Secrets.
    let pods_api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(as_gateway.clone(), &ctx.namespace);
    let error = pods_api
        .list(&Default::default())
        .await
        .expect_err("the gateway may not read pods");
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 403),
        "{error}"
    );
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(as_gateway, &ctx.namespace);
    let error = secrets.get("anything").await.expect_err("nor Secrets");
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 403),
        "{error}"
    );
}

#[tokio::test]
async fn concurrent_requests_during_resume_are_all_served() {
    let ctx = TestContext::new("gateway_concurrent").await;
    let _operator = Operator::start(&ctx);
    asleep(&ctx, "sleeper").await;
    let gateway = Arc::new(
        gateway::start(ctx.client.clone(), options(&ctx))
            .await
            .expect("gateway"),
    );
    let _container = play_container(&ctx, "sleeper");
    let path = format!("/sandboxes/{}/sleeper/", ctx.namespace);
    for (status, _, body) in at_once(&gateway, &path, 10).await {
        assert_eq!((status, body.as_str()), (200, "hello from sleeper"));
    }
    assert_eq!(gateway.wakes(), 1, "ten held requests, one resume");
}

#[tokio::test]
async fn queue_overflow_answers_503() {
    let ctx = TestContext::new("gateway_overflow").await;
    let _operator = Operator::start(&ctx);
    asleep(&ctx, "sleeper").await;
    let gateway = Arc::new(
        gateway::start(
            ctx.client.clone(),
            Options {
                queue: 2,
                hold: Duration::from_secs(3),
                ..options(&ctx)
            },
        )
        .await
        .expect("gateway"),
    );
    // No container ever listens: held requests wait out the hold time.
    let path = format!("/sandboxes/{}/sleeper/", ctx.namespace);
    let answers = at_once(&gateway, &path, 6).await;
    assert!(
        answers
            .iter()
            .all(|(status, retry, _)| *status == 503 && retry.is_some()),
        "{answers:?}"
    );
}

#[tokio::test]
async fn gateway_refuses_non_opted_in_sandbox() {
    let ctx = TestContext::new("gateway_refuses").await;
    let _operator = Operator::start(&ctx);
    let mut closed = reachable("closed", OperatingMode::Running);
    closed.spec.gateway = None;
    create(&ctx, &closed).await;
    let running = wait_phase(&ctx, "closed", Phase::Running).await;
    let ip = running.status.expect("status").pod_ips[0].clone();
    let container = FileServer::start_on(&format!("{ip}:{PORT}")).expect("listen");
    container.put("*", b"should never be reached".to_vec());
    let gateway = gateway::start(
        ctx.client.clone(),
        Options {
            token: Some("s3cret".into()),
            ..options(&ctx)
        },
    )
    .await
    .expect("gateway");
    let path = format!("/sandboxes/{}/closed/", ctx.namespace);
    assert_eq!(get(&gateway, &path, None).await.0, 401, "no token");
    assert_eq!(
        get(&gateway, &path, Some("wrong")).await.0,
        401,
        "wrong token"
    );
    assert_eq!(
        get(&gateway, &path, Some("s3cret")).await.0,
        404,
        "not opted in"
    );
    assert_eq!(
        get(
            &gateway,
            &format!("/sandboxes/{}/absent/", ctx.namespace),
            Some("s3cret")
        )
        .await
        .0,
        404
    );
    assert_eq!(get(&gateway, "/elsewhere", Some("s3cret")).await.0, 404);
    assert_eq!(container.connections(), 0, "no connection was attempted");
}

#[tokio::test]
async fn activity_writes_are_batched() {
    let ctx = TestContext::new("gateway_batches").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &reachable("busy", OperatingMode::Running)).await;
    let container = play_container(&ctx, "busy").await.expect("container");
    let interval = Duration::from_secs(2);
    let gateway = gateway::start(
        ctx.client.clone(),
        Options {
            activity_interval: interval,
            ..options(&ctx)
        },
    )
    .await
    .expect("gateway");
    let path = format!("/sandboxes/{}/busy/", ctx.namespace);
    for _ in 0..30 {
        assert_eq!(get(&gateway, &path, None).await.0, 200);
    }
    eventually("an activity write", WAIT, || async {
        (gateway.activity_writes() >= 1).then_some(())
    })
    .await;
    // However fast or slow the requests came, one Sandbox costs at most one write per flush.
    let (writes, flushes) = (gateway.activity_writes(), gateway.activity_flushes());
    assert!(
        writes <= flushes,
        "{writes} activity writes in {flushes} flushes for one Sandbox"
    );
    assert!(container.connections() >= 30);
    let busy = sandboxes(&ctx).get("busy").await.expect("sandbox");
    assert!(
        busy.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("sandman.dev/last-activity"),
        "activity is recorded where lifecycle decisions read it"
    );
}

/// Echoes WebSocket messages on the pod's IP once the Sandbox runs; the handle resolves once
/// it listens.
fn play_websocket_container(ctx: &TestContext, name: &str) -> tokio::task::JoinHandle<()> {
    let api = sandboxes(ctx);
    let name = name.to_string();
    tokio::spawn(async move {
        let ip = running_pod_ip(&api, &name).await;
        let listener = tokio::net::TcpListener::bind(format!("{ip}:{PORT}"))
            .await
            .expect("listen on the pod IP");
        tokio::spawn(async move { echo(listener).await });
    })
}

async fn echo(listener: tokio::net::TcpListener) {
    {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use futures::{SinkExt, StreamExt};
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() && socket.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}

#[tokio::test]
async fn open_websocket_keeps_sandbox_awake() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let ctx = TestContext::new("gateway_websocket").await;
    let _operator = Operator::start(&ctx);
    let mut chat = reachable("chat", OperatingMode::Running);
    chat.spec.lifecycle = Some(sandman::api::LifecycleSpec {
        idle_timeout: Some("3s".into()),
        ..Default::default()
    });
    create(&ctx, &chat).await;
    let listening = play_websocket_container(&ctx, "chat");
    let gateway = gateway::start(
        ctx.client.clone(),
        Options {
            activity_interval: Duration::from_secs(1),
            ..options(&ctx)
        },
    )
    .await
    .expect("gateway");
    listening.await.expect("the container listens");
    let url = format!(
        "ws://{}/sandboxes/{}/chat/socket",
        gateway.addr, ctx.namespace
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the WebSocket opens through the gateway");
    socket.send(Message::text("ping")).await.expect("send");
    let echo = socket.next().await.expect("a reply").expect("a message");
    assert_eq!(echo.into_text().expect("text").as_str(), "ping");
    // Once the open connection is on record, the Sandbox stays awake, silent for well past
    // the idle timeout.
    eventually("the open connection in status", WAIT, || async {
        let chat = sandboxes(&ctx).get("chat").await.ok()?;
        (chat.status?.activity?.open_connections == 1).then_some(())
    })
    .await;
    stays(
        "awake while the WebSocket is open",
        Duration::from_secs(8),
        || async {
            sandboxes(&ctx).get("chat").await.is_ok_and(|chat| {
                chat.effective_mode() == OperatingMode::Running
                    && chat.status.and_then(|s| s.phase) == Some(Phase::Running)
            })
        },
    )
    .await;
    socket.close(None).await.expect("close");
    drop(socket);
    // Closed, it goes idle and is suspended.
    wait_phase(&ctx, "chat", Phase::Suspended).await;
}

#[tokio::test]
async fn http2_and_per_sandbox_tokens_are_served() {
    let ctx = TestContext::new("gateway_http2_tokens").await;
    let _operator = Operator::start(&ctx);
    let mut private = reachable("private", OperatingMode::Running);
    let token = "only-for-private";
    if let Some(gateway) = private.spec.gateway.as_mut() {
        gateway.token_sha256 = Some(sandman::distribution::sha256_hex(token.as_bytes()));
    }
    create(&ctx, &private).await;
    let _container = play_container(&ctx, "private").await.expect("container");
    let gateway = gateway::start(ctx.client.clone(), options(&ctx))
        .await
        .expect("gateway");
    let path = format!("/sandboxes/{}/private/", ctx.namespace);
    assert_eq!(get(&gateway, &path, None).await.0, 401);
    assert_eq!(get(&gateway, &path, Some("guess")).await.0, 401);
    let (status, _, body) = get(&gateway, &path, Some(token)).await;
    assert_eq!((status, body.as_str()), (200, "hello from private"));

    // HTTP/2 with prior knowledge, as gRPC clients speak it.
    let h2: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = http::Request::get(format!("http://{}{path}", gateway.addr))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .expect("request");
    let response = h2.request(request).await.expect("an HTTP/2 answer");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body.as_ref(), b"hello from private");
}

/// A request's head (request line and headers), read byte by byte up to the blank line.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// Plays a container on the pod's IP that reads each connection's request head and writes what
/// `answer` makes of it, or closes the connection unanswered when it makes nothing.
fn play_raw_container(
    ctx: &TestContext,
    name: &str,
    answer: impl Fn(Vec<u8>) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    play_raw_port(ctx, name, PORT as u16, answer)
}

/// As [`play_raw_container`], on the pod IP's `port`.
fn play_raw_port(
    ctx: &TestContext,
    name: &str,
    port: u16,
    answer: impl Fn(Vec<u8>) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncWriteExt;
    let api = sandboxes(ctx);
    let name = name.to_string();
    let answer = Arc::new(answer);
    let (listening, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let ip = running_pod_ip(&api, &name).await;
        let listener = tokio::net::TcpListener::bind(format!("{ip}:{port}"))
            .await
            .expect("listen on the pod IP");
        let _ = listening.send(());
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut stream).await else {
                    return;
                };
                if let Some(reply) = answer(head) {
                    let _ = stream.write_all(&reply).await;
                }
            });
        }
    });
    tokio::spawn(async move {
        let _ = ready.await;
    })
}

/// Plays a container that answers each request with the request's own head, so a test sees
/// the headers the pod received.
fn play_echo_container(ctx: &TestContext, name: &str) -> tokio::task::JoinHandle<()> {
    play_raw_container(ctx, name, |head| {
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            head.len()
        )
        .into_bytes();
        reply.extend(head);
        Some(reply)
    })
}

/// Plays a container that closes every other connection that brings a request without
/// answering it (the first included), as a server that has just started sometimes does; it
/// counts the requests it received.
fn play_flaky_container(
    ctx: &TestContext,
    name: &str,
    received: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    play_raw_container(ctx, name, move |_| {
        let nth = received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (!nth.is_multiple_of(2)).then(|| {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_vec()
        })
    })
}

/// A request that may be repeated (GET, no body) is sent again when the pod closes the
/// connection before answering; one that may not (POST) is not, and gets a 502.
#[tokio::test]
async fn unanswered_get_is_sent_again_but_post_is_not() {
    use std::sync::atomic::Ordering;
    let ctx = TestContext::new("gateway_replay").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &reachable("flaky", OperatingMode::Running)).await;
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    play_flaky_container(&ctx, "flaky", received.clone())
        .await
        .expect("the container listens");
    let gateway = gateway::start(ctx.client.clone(), options(&ctx))
        .await
        .expect("gateway");
    let path = format!("/sandboxes/{}/flaky/", ctx.namespace);
    let (status, _, body) = get(&gateway, &path, None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(
        received.load(Ordering::SeqCst),
        2,
        "dropped once, then answered"
    );

    let post = http::Request::post(format!("http://{}{path}", gateway.addr))
        .body(http_body_util::Full::new(Bytes::from_static(b"do it once")))
        .expect("request");
    let response = Client::builder(TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>()
        .request(post)
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 502);
    assert_eq!(
        received.load(Ordering::SeqCst),
        3,
        "the POST was sent once only"
    );
}

/// A pod is Running, and accepts connections, before the runtime in it serves. The first
/// runtime call (a POST with a body, which is never sent twice) waits for the runtime's
/// `/health` instead of being the request that finds it still starting.
#[tokio::test]
async fn first_runtime_call_waits_until_the_runtime_answers() {
    use sandman::api::{RUNTIME_PORT, RuntimeSpec};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ctx = TestContext::new("gateway_runtime_start").await;
    // kwok pulls nothing: the runtime image is only a name here, and the test plays the runtime.
    let _operator = Operator::start_configured(&ctx, ctx.client.clone(), |options| {
        options.runtime_image = Some("registry.example/sandman-runtime:test".into());
    });
    let mut starting = reachable("starting", OperatingMode::Running);
    starting.spec.runtime = Some(RuntimeSpec { enabled: true });
    starting.spec.pod_template.spec.containers[0].command = Some(vec!["agent".into()]);
    create(&ctx, &starting).await;
    // Closes its first three connections unanswered, as a runtime still starting does.
    let (connections, posts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (seen, posted) = (connections.clone(), posts.clone());
    play_raw_port(&ctx, "starting", RUNTIME_PORT, move |head| {
        if seen.fetch_add(1, Ordering::SeqCst) < 3 {
            return None;
        }
        if head.starts_with(b"GET /health ") {
            return Some(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_vec());
        }
        posted.fetch_add(head.starts_with(b"POST ") as usize, Ordering::SeqCst);
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nran".to_vec())
    })
    .await
    .expect("the runtime listens");
    let token = sandbox_token(&ctx, "starting").await;
    let gateway = gateway::start(ctx.client.clone(), options(&ctx))
        .await
        .expect("gateway");
    let post = http::Request::post(format!(
        "http://{}/sandboxes/{}/starting/process.Process/Start",
        gateway.addr, ctx.namespace
    ))
    .header("e2b-sandbox-port", RUNTIME_PORT.to_string())
    .header("authorization", format!("Bearer {token}"))
    .body(http_body_util::Full::new(Bytes::from_static(b"do it once")))
    .expect("request");
    let response = Client::builder(TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>()
        .request(post)
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"ran");
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "the POST was sent once, and answered"
    );
    assert!(
        connections.load(Ordering::SeqCst) >= 5,
        "three refused, a /health, the POST"
    );
}

/// The runtime token the operator made for Sandbox `name`, read from its Secret.
async fn sandbox_token(ctx: &TestContext, name: &str) -> String {
    let secret = eventually(&format!("{name}'s runtime token"), WAIT, || async {
        sandboxes(ctx).get(name).await.ok()?.status?.gateway_token
    })
    .await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let data = secrets
        .get(&secret.secret)
        .await
        .expect("token Secret")
        .data;
    data.and_then(|d| d.get("token").cloned())
        .map(|b| String::from_utf8(b.0).expect("utf-8"))
        .expect("a token")
}

/// A pod that never answers once got one bodiless GET about 14 times in 5 s. Replays are now
/// bounded per request (3) and per Sandbox (a budget of 10 that all requests share, earned
/// back at 2 a second), so twenty clients of a dead pod do not become hundreds of requests.
#[tokio::test]
async fn gateway_replays_are_bounded_per_request_and_per_sandbox() {
    use std::sync::atomic::Ordering;
    let ctx = TestContext::new("gateway_replay_bound").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &reachable("dead", OperatingMode::Running)).await;
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = received.clone();
    play_raw_container(&ctx, "dead", move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        None
    })
    .await
    .expect("the container listens");
    let gateway = gateway::start(ctx.client.clone(), options(&ctx))
        .await
        .expect("gateway");
    let path = format!("/sandboxes/{}/dead/", ctx.namespace);
    let started = std::time::Instant::now();
    let (status, _, _) = get(&gateway, &path, None).await;
    assert_eq!(status, 502);
    assert_eq!(
        received.load(Ordering::SeqCst),
        4,
        "one try and three replays"
    );

    let clients = 20;
    let answers = futures::future::join_all((0..clients).map(|_| get(&gateway, &path, None))).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 502));
    let replays = received.load(Ordering::SeqCst) - 4 - clients;
    // What the budget allows: 10 at first, 3 of them spent, and 2 a second earned since.
    let earned = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        replays <= 7 + earned,
        "{replays} replays for {clients} requests in {:?}",
        started.elapsed()
    );
    assert!(replays < clients * 3, "the per-Sandbox budget bit");
}

/// Client `X-Forwarded-For`/`Forwarded` once passed through unchanged and none was added, and
/// headers a client named in `Connection:` were forwarded.
#[tokio::test]
async fn gateway_sets_its_own_forwarding_headers() {
    let ctx = TestContext::new("gateway_forwarding").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &reachable("echo", OperatingMode::Running)).await;
    play_echo_container(&ctx, "echo")
        .await
        .expect("the container listens");
    let gateway = gateway::start(ctx.client.clone(), options(&ctx))
        .await
        .expect("gateway");
    let request = http::Request::get(format!(
        "http://{}/sandboxes/{}/echo/",
        gateway.addr, ctx.namespace
    ))
    .header("x-forwarded-for", "10.9.8.7")
    .header("forwarded", "for=10.9.8.7")
    .header("connection", "x-secret-hop")
    .header("x-secret-hop", "not for the pod")
    .body(Empty::<Bytes>::new())
    .expect("request");
    let response = client().request(request).await.expect("answer");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let head = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(head.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
    assert!(!head.contains("10.9.8.7"), "{head}");
    assert!(!head.contains("x-secret-hop"), "{head}");
    assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
}

/// A Sandbox on the host's network has its node's IP as pod IP: the gateway once proxied to
/// services on the node (the operator's own /metrics). An expired Sandbox once held every
/// request for the whole hold time and then said "waking up".
#[tokio::test]
async fn gateway_refuses_host_network_and_answers_expired_at_once() {
    let ctx = TestContext::new("gateway_host_network").await;
    // Host networking is refused by the pod baseline; this operator leaves it to the gateway.
    let _operator = Operator::start_configured(&ctx, ctx.client.clone(), |o| {
        o.pod_baseline = false;
    });
    let mut host = reachable("host", OperatingMode::Running);
    host.spec.pod_template.spec.host_network = Some(true);
    create(&ctx, &host).await;
    let ip = running_pod_ip(&sandboxes(&ctx), "host").await;
    let node_service = FileServer::start_on(&format!("{ip}:{PORT}")).expect("listen");
    node_service.put("*", b"the node's own metrics".to_vec());

    let mut expired = reachable("expired", OperatingMode::Running);
    expired.spec.shutdown_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60),
    ));
    create(&ctx, &expired).await;
    wait_phase(&ctx, "expired", Phase::Expired).await;

    let gateway = gateway::start(
        ctx.client.clone(),
        Options {
            hold: Duration::from_secs(600),
            ..options(&ctx)
        },
    )
    .await
    .expect("gateway");
    let (status, _, _) = get(
        &gateway,
        &format!("/sandboxes/{}/host/", ctx.namespace),
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(node_service.connections(), 0, "no connection to the node");
    let (status, _, body) = get(
        &gateway,
        &format!("/sandboxes/{}/expired/", ctx.namespace),
        None,
    )
    .await;
    assert_eq!((status, body.trim()), (410, "the Sandbox has expired"));
}

/// 300 slowloris connections were once held for 60 s: no header timeout, no connection bound.
#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ctx = TestContext::new("gateway_slowloris").await;
    let gateway = gateway::start(
        ctx.client.clone(),
        Options {
            header_timeout: Duration::from_secs(1),
            max_connections: 4,
            ..options(&ctx)
        },
    )
    .await
    .expect("gateway");
    let mut slow = Vec::new();
    for i in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(gateway.addr)
            .await
            .expect("connect");
        // Half a request (or, for some, nothing at all), and then silence.
        if i % 2 == 0 {
            stream
                .write_all(b"GET /sandboxes/x/y/ HTTP/1.1\r\nHost: a\r\nX-Slow: ")
                .await
                .expect("write");
        }
        slow.push(stream);
    }
    for (i, stream) in slow.iter_mut().enumerate() {
        // Every slow connection is closed by the gateway (EOF or reset), none is held.
        let mut buffer = [0u8; 256];
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert_eq!(closed, Ok(true), "slow connection {i} is cut off");
    }
    // The slots are free again for a well-behaved client.
    let (status, _, _) = get(&gateway, "/elsewhere", None).await;
    assert_eq!(status, 404);
}

/// The open-connection mark once dropped when response headers arrived, so a streamed answer
/// (SSE, tokens) did not count and a Sandbox was suspended mid-stream.
#[tokio::test]
async fn streaming_response_counts_as_an_open_connection() {
    use tokio::io::AsyncWriteExt;
    let ctx = TestContext::new("gateway_streaming").await;
    let _operator = Operator::start(&ctx);
    create(&ctx, &reachable("stream", OperatingMode::Running)).await;
    let ip = running_pod_ip(&sandboxes(&ctx), "stream").await;
    let listener = tokio::net::TcpListener::bind(format!("{ip}:{PORT}"))
        .await
        .expect("listen on the pod IP");
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let Some(_) = read_head(&mut stream).await else {
            return;
        };
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ntoken \r\n")
            .await;
        let _ = finished.await;
        let _ = stream.write_all(b"4\r\ndone\r\n0\r\n\r\n").await;
    });
    let gateway = gateway::start(
        ctx.client.clone(),
        Options {
            activity_interval: Duration::from_secs(1),
            ..options(&ctx)
        },
    )
    .await
    .expect("gateway");
    let request = http::Request::get(format!(
        "http://{}/sandboxes/{}/stream/",
        gateway.addr, ctx.namespace
    ))
    .body(Empty::<Bytes>::new())
    .expect("request");
    let response = client().request(request).await.expect("headers");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().ok().as_deref(), Some(&b"token "[..]));
    let open = |n: u32| {
        let ctx = &ctx;
        move || async move {
            let sandbox = sandboxes(ctx).get("stream").await.ok()?;
            (sandbox.status?.activity?.open_connections == n).then_some(())
        }
    };
    eventually("the stream to count as open", WAIT, open(1)).await;
    let _ = finish.send(());
    let rest = body.collect().await.expect("the rest").to_bytes();
    assert_eq!(&rest[..], b"done");
    eventually("the stream to be closed", WAIT, open(0)).await;
}

/// An empty `--token-file` once gave an empty token, which accepted `Authorization: Bearer `.
#[test]
fn gateway_refuses_to_start_with_an_empty_token() {
    let dir = std::env::temp_dir().join(format!("sandman-empty-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("token");
    std::fs::write(&file, "  \n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sandman"))
        .args(["gateway", "--metrics-listen", "off", "--token-file"])
        .arg(&file)
        .env("KUBECONFIG", dir.join("absent-kubeconfig"))
        .output()
        .expect("run sandman gateway");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is empty"), "{stderr}");
}
