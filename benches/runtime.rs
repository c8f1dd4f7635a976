//! The in-Sandbox runtime on the local cluster's real node, through the gateway and direct
//! to the pod, side by side in one run (release build):
//!
//! - a command round trip (`true`, Start to end of stream), p50 and p99, under runc and gVisor;
//! - 256 MiB up and down through the gateway (`POST`/`GET /files`) against `nc` in the same
//!   container over a direct TCP connection;
//! - wake on exec: suspended to the first stdout byte, and the same for a Sandbox that
//!   checkpoints (its runtime inside the agent's gVisor sandbox, restored with it);
//! - the runtime's resident memory after its first call.
//!
//! Needs what `tests/runtime.rs` needs.
//!
//! ```sh
//! cargo bench --bench runtime
//! SANDMAN_RUNTIME_CALLS=500 SANDMAN_RUNTIME_MIB=256 SANDMAN_RUNTIME_WAKES=5 cargo bench --bench runtime
//! ```

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::real_node::RealNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACE: &str = "runtime-bench";
type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn main() {
    let calls = common::setting("SANDMAN_RUNTIME_CALLS", 200);
    let mib = common::setting("SANDMAN_RUNTIME_MIB", 256);
    let wakes = common::setting("SANDMAN_RUNTIME_WAKES", 5);
    common::on_control_plane("runtime", |plane, dir| async move {
        let client = sandman_testenv::client_from_kubeconfig(plane.kubeconfig())
            .await
            .expect("client");
        run(client, &dir, calls, mib, wakes).await;
        plane
    });
}

/// Where one Sandbox's runtime is, both ways.
struct Target {
    name: String,
    gateway: String,
    direct: String,
    pod_ip: String,
    token: String,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn percentile(values: &mut [Duration], p: f64) -> f64 {
    values.sort();
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index].as_secs_f64() * 1000.0
}

fn envelope(message: &serde_json::Value) -> Bytes {
    sandman_connect::request_envelope(message)
}

/// Starts `cmd args` and reads its stream to the end: the time to the first stdout byte and
/// to the end.
async fn call(
    http: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Body>,
    base: &str,
    token: &str,
    script: &str,
) -> (Option<Duration>, Duration, String) {
    let started = Instant::now();
    let request = http::Request::post(format!("{base}/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("x-access-token", token)
        .header("e2b-sandbox-port", "49983")
        .body(full(envelope(&serde_json::json!({
            "process": { "cmd": "/bin/sh", "args": ["-c", script] }
        }))))
        .expect("request");
    let response = http.request(request).await.expect("response");
    assert_eq!(response.status(), 200, "{base}");
    let mut body = response.into_body();
    let mut envelopes = sandman_connect::Envelopes::default();
    let mut first = None;
    let mut out = String::new();
    loop {
        match envelopes.take().expect("envelope") {
            Some(sandman_connect::Envelope::Message(json)) => {
                let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
                if let Some(text) = value["event"]["data"]["stdout"].as_str() {
                    first.get_or_insert_with(|| started.elapsed());
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .expect("base64");
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            Some(sandman_connect::Envelope::End(_)) => break,
            None => {
                let frame = body.frame().await.expect("a frame").expect("frame");
                if let Ok(data) = frame.into_data() {
                    envelopes.push(&data);
                }
            }
        }
    }
    (first, started.elapsed(), out)
}

async fn run(client: kube::Client, dir: &std::path::Path, calls: usize, mib: usize, wakes: usize) {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox (busybox-static)");
    for applet in ["sh", "true", "nc", "sleep", "cat", "grep", "echo", "mkdir"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet");
    }
    common::namespace(&client, NAMESPACE).await;
    let node = RealNode::start(client.clone(), 0, &dir.join("node"), &rootfs)
        .await
        .expect("real node");
    let image = sandman_testenv::runtime_image::runtime_image();
    node.load_image(sandman_testenv::runtime_image::REFERENCE, image);
    common::load_supervisor(&node, dir, &rootfs, env!("CARGO_BIN_EXE_sandman"));
    let operator_client = client.clone();
    tokio::spawn(async move {
        let options = sandman::controller::Options {
            namespace: Some(NAMESPACE.into()),
            min_dwell: Duration::ZERO,
            runtime_image: Some(sandman_testenv::runtime_image::REFERENCE.into()),
            supervisor_image: Some(sandman_testenv::supervisor_image::REFERENCE.into()),
            ..sandman::controller::Options::default()
        };
        let _ = sandman::controller::run(operator_client, options, std::future::pending()).await;
    });
    let gateway = common::gateway(&client, NAMESPACE).await;
    let http: HttpClient<_, Body> = HttpClient::builder(TokioExecutor::new()).build_http();
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), NAMESPACE);
    let mut targets = Vec::new();
    for runtime in ["runc", "gvisor"] {
        targets.push(start(&client, &node, &sandboxes, runtime, false, gateway.addr).await);
    }

    println!("\n## The in-Sandbox runtime\n");
    println!("| what | runc | gVisor |\n|---|---|---|");
    let mut rss = Vec::new();
    for target in &targets {
        let (_, _, status) = call(
            &http,
            &target.direct,
            &target.token,
            "grep VmRSS /proc/1/status",
        )
        .await;
        rss.push(
            status
                .trim()
                .trim_start_matches("VmRSS:")
                .trim()
                .to_string(),
        );
    }
    println!(
        "| runtime resident memory after its first call (PID 1's VmRSS) | {} | {} |",
        rss[0], rss[1]
    );
    for (label, base) in [("through the gateway", true), ("direct to the pod", false)] {
        let mut cells = Vec::new();
        for target in &targets {
            let url = if base {
                &target.gateway
            } else {
                &target.direct
            };
            let mut times = Vec::new();
            for _ in 0..calls {
                let (_, took, _) = call(&http, url, &target.token, "true").await;
                times.push(took);
            }
            cells.push(format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                percentile(&mut times, 0.5),
                percentile(&mut times, 0.99)
            ));
        }
        println!(
            "| command round trip (`true`), {label}, {calls} calls | {} | {} |",
            cells[0], cells[1]
        );
    }
    let mut up = Vec::new();
    let mut down = Vec::new();
    for target in &targets {
        let (gateway_up, gateway_down) = files(&http, &target.gateway, &target.token, mib).await;
        let (direct_up, direct_down) = files(&http, &target.direct, &target.token, mib).await;
        let (nc_up, nc_down) = raw_tcp(&http, target, mib).await;
        up.push(format!(
            "gateway {gateway_up:.0} MiB/s, direct {direct_up:.0} MiB/s (**{:.2}**), nc {nc_up:.0} MiB/s (**{:.2}**)",
            gateway_up / direct_up,
            gateway_up / nc_up
        ));
        down.push(format!(
            "gateway {gateway_down:.0} MiB/s, direct {direct_down:.0} MiB/s (**{:.2}**), nc {nc_down:.0} MiB/s (**{:.2}**)",
            gateway_down / direct_down,
            gateway_down / nc_down
        ));
    }
    println!(
        "| upload {mib} MiB, `POST /files`: through the gateway; direct to the runtime (ratio); `nc` over direct TCP (ratio) | {} | {} |",
        up[0], up[1]
    );
    println!(
        "| download {mib} MiB, `GET /files`: the same | {} | {} |",
        down[0], down[1]
    );
    let mut cells = Vec::new();
    for target in &targets {
        cells.push(wake_times(&http, &node, &sandboxes, target, wakes).await);
    }
    println!(
        "| wake on exec: suspended → first stdout byte, no memory restore, {wakes} wakes | {} | {} |",
        cells[0], cells[1]
    );
    let keeper = start(&client, &node, &sandboxes, "keeper", true, gateway.addr).await;
    println!(
        "| wake on exec with a memory restore (checkpointed on suspend; the runtime inside the agent's gVisor sandbox), {wakes} wakes | | {} |",
        wake_times(&http, &node, &sandboxes, &keeper, wakes).await
    );
}

/// Suspends `target` and wakes it with a command through the gateway, `wakes` times: the time
/// to its first stdout byte, as p50 and max.
async fn wake_times(
    http: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Body>,
    node: &RealNode,
    sandboxes: &Api<Sandbox>,
    target: &Target,
    wakes: usize,
) -> String {
    let mut times = Vec::new();
    for _ in 0..wakes {
        // The last wake's override ends once the spec says Running and the operator has
        // seen it; only then does Suspended suspend again.
        set_mode(sandboxes, &target.name, "Running").await;
        while sandboxes
            .get(&target.name)
            .await
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|s| s.mode_override.is_some())
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        set_mode(sandboxes, &target.name, "Suspended").await;
        wait(sandboxes, &target.name, Phase::Suspended).await;
        while node.containers_of(NAMESPACE, &target.name).await > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (first, _, out) = call(http, &target.gateway, &target.token, "echo awake").await;
        assert_eq!(out, "awake\n");
        times.push(first.expect("a first byte"));
        wait(sandboxes, &target.name, Phase::Running).await;
    }
    format!(
        "p50 {:.0} ms, max {:.0} ms",
        percentile(&mut times, 0.5),
        percentile(&mut times, 1.0)
    )
}

/// A Sandbox with the runtime: under RuntimeClass `runtime`, or, when it `checkpoints`, under
/// the checkpoint supervisor (which runs its agent under gVisor itself) with a volume.
async fn start(
    client: &kube::Client,
    node: &RealNode,
    sandboxes: &Api<Sandbox>,
    runtime: &str,
    checkpoints: bool,
    gateway: std::net::SocketAddr,
) -> Target {
    let name = format!("bench-{runtime}");
    let scheduling = node.scheduling();
    let mut value = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox",
        "metadata": { "name": name },
        "spec": {
            "runtime": { "enabled": true },
            "podTemplate": { "spec": {
                "nodeSelector": scheduling["nodeSelector"],
                "tolerations": scheduling["tolerations"],
                "containers": [{ "name": "agent", "image": "busybox", "command": ["sleep", "100000"] }],
            }},
        },
    });
    if checkpoints {
        value["spec"]["lifecycle"] = serde_json::json!({ "checkpoint": "OnSuspend" });
        value["spec"]["podTemplate"]["spec"]["containers"][0]["volumeMounts"] =
            serde_json::json!([{ "name": "workspace", "mountPath": "/workspace" }]);
        value["spec"]["volumeClaimTemplates"] = serde_json::json!([{
            "metadata": { "name": "workspace" },
            "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
        }]);
    } else {
        value["spec"]["podTemplate"]["spec"]["runtimeClassName"] = runtime.into();
    }
    let sandbox: Sandbox = serde_json::from_value(value).expect("sandbox");
    sandboxes
        .create(&PostParams::default(), &sandbox)
        .await
        .expect("create");
    wait(sandboxes, &name, Phase::Running).await;
    let pod_ip = sandboxes
        .get(&name)
        .await
        .expect("sandbox")
        .status
        .and_then(|s| s.pod_ips.first().cloned())
        .expect("a pod IP");
    let secret = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .get(&format!("sandman-token-{name}"))
        .await
        .expect("token");
    let token = String::from_utf8(secret.data.expect("data")["token"].0.clone()).expect("token");
    Target {
        gateway: format!("http://{gateway}/sandboxes/{NAMESPACE}/{name}"),
        direct: format!("http://{pod_ip}:49983"),
        name,
        pod_ip,
        token,
    }
}

async fn set_mode(api: &Api<Sandbox>, name: &str, mode: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": { "operatingMode": mode } })),
    )
    .await
    .expect("set the mode");
}

async fn wait(api: &Api<Sandbox>, name: &str, phase: Phase) {
    loop {
        if let Ok(sandbox) = api.get(name).await
            && sandbox.status.and_then(|s| s.phase) == Some(phase)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn chunks(mib: usize) -> Body {
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    let stream = futures::stream::iter(
        (0..mib).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    BodyExt::boxed(StreamBody::new(stream))
}

/// Upload and download of `mib` MiB by `/files` at `base`, in MiB/s.
async fn files(
    http: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Body>,
    base: &str,
    token: &str,
    mib: usize,
) -> (f64, f64) {
    let url = format!("{base}/files?path=/tmp/bench.bin");
    let started = Instant::now();
    let request = http::Request::post(&url)
        .header("x-access-token", token)
        .header("e2b-sandbox-port", "49983")
        .header("content-type", "application/octet-stream")
        .body(chunks(mib))
        .expect("request");
    let response = http.request(request).await.expect("upload");
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
    let up = mib as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let request = http::Request::get(&url)
        .header("x-access-token", token)
        .header("e2b-sandbox-port", "49983")
        .body(full(Bytes::new()))
        .expect("request");
    let response = http.request(request).await.expect("download");
    let mut body = response.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            received += data.len();
        }
    }
    assert_eq!(received, mib << 20);
    let down = mib as f64 / started.elapsed().as_secs_f64();
    (up, down)
}

/// The same bytes over a direct TCP connection to `nc` in the container: the ceiling.
async fn raw_tcp(
    http: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Body>,
    target: &Target,
    mib: usize,
) -> (f64, f64) {
    let listen = |script: &'static str| {
        let http = http.clone();
        let direct = target.direct.clone();
        let token = target.token.clone();
        tokio::spawn(async move { call(&http, &direct, &token, script).await })
    };
    let receiving = listen("nc -l -p 9000 > /tmp/raw.bin");
    let mut stream = connect(&target.pod_ip, 9000).await;
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    for _ in 0..mib {
        stream.write_all(&chunk).await.expect("write");
    }
    stream.shutdown().await.expect("shutdown");
    receiving.await.expect("nc");
    let up = mib as f64 / started.elapsed().as_secs_f64();
    let sending = listen("nc -l -p 9001 < /tmp/raw.bin");
    let mut stream = connect(&target.pod_ip, 9001).await;
    let started = Instant::now();
    let mut buffer = vec![0u8; 1 << 20];
    let mut received = 0usize;
    loop {
        let n = stream.read(&mut buffer).await.expect("read");
        if n == 0 {
            break;
        }
        received += n;
        if received >= mib << 20 {
            break;
        }
    }
    let down = mib as f64 / started.elapsed().as_secs_f64();
    drop(stream);
    sending.abort();
    (up, down)
}

async fn connect(ip: &str, port: u16) -> tokio::net::TcpStream {
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect((ip, port)).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
