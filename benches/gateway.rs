//! Gateway benchmarks against the local control plane (release build):
//!
//! - wake latency: from a request to a Suspended Sandbox until the first byte of its response,
//!   over 50 wakes;
//! - overhead for a Running Sandbox: the same load straight to the pod, through the gateway and,
//!   where Debian's `nginx` is installed, through nginx as a reverse proxy to the same pod (the
//!   reference proxy), side by side (alternating, 3 rounds each), with a load generator on
//!   loopback.
//!
//! ```sh
//! cargo bench --bench gateway
//! SANDMAN_GATEWAY_WAKES=10 cargo bench --bench gateway
//! ```

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::{ControlPlane, Options};

const NAMESPACE: &str = "gateway-bench";

fn main() {
    let wakes: usize = std::env::var("SANDMAN_GATEWAY_WAKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("sandman-gateway-bench-{}", std::process::id()));
    let mut options = Options::new(&dir);
    options.crds_dir = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"));
    let mut plane = ControlPlane::start(&options).expect("start the local control plane");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(&plane, wakes));
    plane.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A container that answers every request at once, with keep-alive, on every local address:
/// whatever loopback IP the pod gets, it is already listening.
async fn hello_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

async fn run(plane: &ControlPlane, wakes: usize) {
    let client = sandman_testenv::client_from_kubeconfig(plane.kubeconfig())
        .await
        .expect("client");
    common::namespace(&client, NAMESPACE).await;
    common::spawn_operator(&client, NAMESPACE);
    let port = hello_server().await;
    let gateway = common::gateway(&client, NAMESPACE).await;
    let sandbox: Sandbox = serde_json::from_value(serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": { "name": "bench" },
        "spec": {
            "podTemplate": { "spec": { "containers": [{
                "name": "agent", "image": "agent", "ports": [{ "containerPort": port }],
            }] } },
            "gateway": { "enabled": true },
        },
    }))
    .expect("sandbox");
    let api: Api<Sandbox> = Api::namespaced(client.clone(), NAMESPACE);
    api.create(&PostParams::default(), &sandbox)
        .await
        .expect("create sandbox");
    let pod_ip = wait_phase(&api, Phase::Running).await;
    let through = format!("http://{}/sandboxes/{NAMESPACE}/bench/", gateway.addr);
    let direct = format!("http://{pod_ip}:{port}/");

    // Wake latency.
    let http: HttpClient<HttpConnector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let mut latencies = Vec::new();
    for i in 0..wakes {
        // A wake resumes by an override in status and leaves the spec as it was, so the user
        // suspends again by saying Running, then Suspended.
        for mode in ["Running", "Suspended"] {
            api.patch(
                "bench",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": { "operatingMode": mode } })),
            )
            .await
            .expect("suspend");
        }
        wait_phase(&api, Phase::Suspended).await;
        let started = Instant::now();
        let response = http
            .get(through.parse().expect("uri"))
            .await
            .expect("a response");
        let first_byte = started.elapsed();
        assert_eq!(response.status(), 200, "wake {i}");
        latencies.push(first_byte);
        wait_phase(&api, Phase::Running).await;
    }
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index].as_secs_f64() * 1000.0
    };
    println!("\n## Gateway wake latency ({} wakes)\n", latencies.len());
    println!("| p50 | p99 | min | max |\n|---|---|---|---|");
    println!(
        "| {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
        percentile(0.5),
        percentile(0.99),
        percentile(0.0),
        percentile(1.0)
    );
    println!(
        "gateway resumes: {} (one per wake: {})",
        gateway.wakes(),
        gateway.wakes() == wakes as u64
    );

    // Overhead, side by side.
    let nginx = Nginx::start(&pod_ip, port);
    let mut paths = vec![("direct", direct.clone()), ("gateway", through.clone())];
    if let Some(nginx) = &nginx {
        paths.push(("nginx", nginx.url.clone()));
    }
    let mut rows = Vec::new();
    for round in 0..3 {
        for (label, url) in &paths {
            let label = *label;
            let load = load(url, 16, Duration::from_secs(3)).await;
            eprintln!(
                "round {round} {label}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
                load.per_second, load.p50_ms, load.p99_ms
            );
            rows.push((label, load));
        }
    }
    let median = |label: &str, f: fn(&Load) -> f64| {
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|(l, _)| *l == label)
            .map(|(_, x)| f(x))
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (direct_rps, gateway_rps) = (
        median("direct", |l| l.per_second),
        median("gateway", |l| l.per_second),
    );
    let (direct_p50, gateway_p50) = (
        median("direct", |l| l.p50_ms),
        median("gateway", |l| l.p50_ms),
    );
    println!(
        "\n## Gateway overhead, Running Sandbox (16 connections, 3 s, 3 rounds each; medians)\n"
    );
    println!("| path | req/s | p50 |\n|---|---|---|");
    println!("| direct to the pod | {direct_rps:.0} | {direct_p50:.3} ms |");
    println!("| through the gateway | {gateway_rps:.0} | {gateway_p50:.3} ms |");
    println!(
        "\nthroughput ratio gateway/direct: {:.2}; added p50: {:.3} ms",
        gateway_rps / direct_rps,
        gateway_p50 - direct_p50
    );
    if nginx.is_some() {
        let (nginx_rps, nginx_p50) = (
            median("nginx", |l| l.per_second),
            median("nginx", |l| l.p50_ms),
        );
        println!("| through nginx (reference proxy) | {nginx_rps:.0} | {nginx_p50:.3} ms |");
        println!(
            "throughput ratio gateway/nginx: {:.2}; p50 gateway - nginx: {:.3} ms",
            gateway_rps / nginx_rps,
            gateway_p50 - nginx_p50
        );
    } else {
        println!("(nginx not installed: no reference proxy row)");
    }
}

/// Debian's nginx as a reverse proxy to the pod, with upstream keep-alive, as the reference
/// the gateway is held to. Stopped when dropped.
struct Nginx {
    url: String,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(pod_ip: &str, port: u16) -> Option<Self> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("sandman-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let conf = format!(
            "worker_processes auto;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
               upstream pod {{ server {pod_ip}:{port}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{listen};\n\
                 location / {{ proxy_pass http://pod; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).ok()?;
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .spawn()
            .ok()?;
        let url = format!("http://127.0.0.1:{listen}/");
        // Ready once it accepts.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                return Some(Self { url, child, dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Load {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `connections` keep-alive clients sending requests back to back for `duration`.
async fn load(url: &str, connections: usize, duration: Duration) -> Load {
    let uri: http::Uri = url.parse().expect("uri");
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let uri = uri.clone();
            tokio::spawn(async move {
                let client: HttpClient<HttpConnector, Empty<Bytes>> =
                    HttpClient::builder(TokioExecutor::new()).build_http();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let response = client.get(uri.clone()).await.expect("response");
                    let _ = response.into_body().collect().await;
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all.sort();
    let at = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    Load {
        per_second: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// Waits for the Sandbox's phase; returns its pod IP when it has one.
async fn wait_phase(api: &Api<Sandbox>, phase: Phase) -> String {
    for _ in 0..6000 {
        if let Ok(sandbox) = api.get("bench").await
            && let Some(status) = sandbox.status
            && status.phase == Some(phase)
        {
            return status.pod_ips.first().cloned().unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the Sandbox never reached {phase:?}");
}
