//! The in-Sandbox runtime on the real node: commands and files inside a Sandbox's own
//! container, under runc and gVisor, through the gateway and `sandman sandbox`, and the
//! runtime's refusal of anyone without the Sandbox's token. Needs what `tests/real_nodes.rs`
//! needs; `hack/test.sh` installs it.

mod common;

use std::process::Output;
use std::time::Duration;

use common::cli::describe;
use common::real_node::{Node, real_node_with_runtime};
use common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use sandman::api::{OperatingMode, Phase, RuntimeSpec, Sandbox};
use sandman::gateway::{self, Gateway};
use sandman_testenv::harness::{eventually, stays};

struct World {
    env: Node,
    gateway: Gateway,
}

async fn world(test: &str) -> Option<World> {
    let env = real_node_with_runtime(test).await?;
    let gateway = gateway::start(env.ctx.client.clone(), common::gateway::options(&env.ctx))
        .await
        .expect("gateway");
    Some(World { env, gateway })
}

impl World {
    /// A Sandbox with the runtime whose own command is `sleep`, as an unmodified image's
    /// would be, running as user 1000 under `runtime_class`.
    fn sandbox(&self, name: &str, runtime_class: Option<&str>) -> Sandbox {
        let mut sandbox = self.env.sandbox(name, "exec sleep 100000");
        sandbox.spec.runtime = Some(RuntimeSpec { enabled: true });
        let spec = &mut sandbox.spec.pod_template.spec;
        spec.runtime_class_name = runtime_class.map(str::to_string);
        spec.containers[0].command = Some(vec!["sleep".into(), "100000".into()]);
        spec.security_context = serde_json::from_value(serde_json::json!({
            "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
        }))
        .ok();
        sandbox
    }

    async fn running(&self, sandbox: &Sandbox) -> String {
        create(&self.env.ctx, sandbox).await;
        let name = sandbox.metadata.name.clone().expect("a name");
        common::gateway::running_pod_ip(&sandboxes(&self.env.ctx), &name).await
    }

    fn target(&self, name: &str) -> String {
        format!("{}/{name}", self.env.ctx.namespace)
    }

    async fn cli(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        common::cli::sandbox_command(&self.gateway, &self.env.ctx, args, stdin).await
    }

    async fn exec(&self, name: &str, command: &[&str]) -> Output {
        let target = self.target(name);
        let mut args = vec!["exec", target.as_str(), "--"];
        args.extend_from_slice(command);
        self.cli(&args, None).await
    }

    async fn token(&self, name: &str) -> String {
        let secret = eventually(&format!("{name}'s token"), WAIT, || async {
            Api::<Secret>::namespaced(self.env.ctx.client.clone(), &self.env.ctx.namespace)
                .get(&format!("sandman-token-{name}"))
                .await
                .ok()
        })
        .await;
        let data = secret.data.expect("data");
        String::from_utf8(data["token"].0.clone()).expect("a text token")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `POST <rpc>` straight to the runtime at the pod's address, with `token`: the status.
async fn direct(address: &str, rpc: &str, token: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(format!("{address}:49983"))
        .await
        .expect("the pod's runtime port");
    let token = token.map_or(String::new(), |t| format!("x-access-token: {t}\r\n"));
    let request = format!(
        "POST /{rpc} HTTP/1.1\r\nhost: pod\r\ncontent-type: application/json\r\n{token}content-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn exec_streams_output_and_exit_code() {
    let Some(world) = world("runtime_exec").await else {
        return;
    };
    for (name, class) in [("plain", None), ("guarded", Some("gvisor"))] {
        world.running(&world.sandbox(name, class)).await;
        let output = world
            .exec(
                name,
                &[
                    "sh",
                    "-c",
                    "echo out; echo err >&2; id -u; grep CapEff /proc/self/status; exit 3",
                ],
            )
            .await;
        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(3),
            "{name}: {}",
            describe(&output)
        );
        assert!(stdout.starts_with("out\n1000\n"), "{name}: {stdout}");
        // The command has the container's rights: its user, and no capability.
        assert!(
            stdout.contains("CapEff:\t0000000000000000"),
            "{name}: {stdout}"
        );
        assert!(
            text(&output.stderr).contains("err"),
            "{name}: {}",
            describe(&output)
        );
    }
    // Under gVisor the command runs in gVisor's kernel, beside the agent.
    let output = world
        .exec("guarded", &["sh", "-c", "dmesg; ls /proc"])
        .await;
    assert!(
        text(&output.stdout).contains("gVisor"),
        "{}",
        describe(&output)
    );
}

#[tokio::test]
async fn runtime_refuses_requests_without_the_sandbox_token() {
    let Some(world) = world("runtime_token").await else {
        return;
    };
    let address = world.running(&world.sandbox("mine", None)).await;
    let token = world.token("mine").await;
    // Another tenant's pod reaches the pod IP: without the token it gets nothing.
    assert_eq!(direct(&address, "process.Process/List", None).await, 401);
    assert_eq!(
        direct(&address, "process.Process/List", Some("guess")).await,
        401
    );
    assert_eq!(
        direct(&address, "filesystem.Filesystem/Stat", Some("")).await,
        401
    );
    // The control: the Sandbox's own token opens it.
    assert_eq!(
        direct(&address, "process.Process/List", Some(&token)).await,
        200
    );
}

#[tokio::test]
async fn another_sandboxes_token_is_refused() {
    let Some(world) = world("runtime_other_token").await else {
        return;
    };
    let first = world.running(&world.sandbox("first", None)).await;
    world.running(&world.sandbox("second", None)).await;
    let first_token = world.token("first").await;
    let second = world.target("second");
    let refused = world
        .cli(
            &[
                "exec",
                &second,
                "--token",
                &first_token,
                "--",
                "touch",
                "/tmp/pwned",
            ],
            None,
        )
        .await;
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(
        text(&refused.stderr).contains("refused the token"),
        "{}",
        describe(&refused)
    );
    let second_pod = common::gateway::running_pod_ip(&sandboxes(&world.env.ctx), "second").await;
    assert_eq!(
        direct(&second_pod, "process.Process/List", Some(&first_token)).await,
        401
    );
    assert_eq!(
        direct(&first, "process.Process/List", Some(&first_token)).await,
        200
    );
    let output = world.exec("second", &["ls", "/tmp/pwned"]).await;
    assert_ne!(
        output.status.code(),
        Some(0),
        "the refused command ran: {}",
        describe(&output)
    );
}

#[tokio::test]
async fn exec_wakes_a_suspended_sandbox() {
    let Some(world) = world("runtime_wake").await else {
        return;
    };
    world.running(&world.sandbox("sleeper", None)).await;
    world
        .env
        .set_mode("sleeper", OperatingMode::Suspended)
        .await;
    wait_phase(&world.env.ctx, "sleeper", Phase::Suspended).await;
    // Its spec stays Suspended: the wake is the gateway's, for this call.
    let output = world.exec("sleeper", &["echo", "awake"]).await;
    assert_eq!(text(&output.stdout), "awake\n", "{}", describe(&output));
    let sandbox = sandboxes(&world.env.ctx)
        .get("sleeper")
        .await
        .expect("sleeper");
    assert_eq!(sandbox.status.and_then(|s| s.phase), Some(Phase::Running));
}

#[tokio::test]
async fn running_command_keeps_sandbox_awake() {
    let Some(world) = world("runtime_awake").await else {
        return;
    };
    let mut sandbox = world.sandbox("busy", None);
    sandbox.spec.lifecycle =
        serde_json::from_value(serde_json::json!({ "idleTimeout": "3s" })).ok();
    world.running(&sandbox).await;
    let target = world.target("busy");
    let gateway = format!("http://{}", world.gateway.addr);
    let kubeconfig = world.env.ctx.kubeconfig().to_path_buf();
    let running = tokio::spawn(async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sandman"))
            .args([
                "sandbox",
                "exec",
                &target,
                "--",
                "sh",
                "-c",
                "sleep 15; echo done",
            ])
            .env("SANDMAN_GATEWAY", gateway)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .await
            .expect("sandman")
    });
    let api = sandboxes(&world.env.ctx);
    // Three times its idle timeout, while the command runs: never suspended.
    stays(
        "busy to stay Running while its command runs",
        Duration::from_secs(10),
        || async {
            api.get("busy")
                .await
                .ok()
                .and_then(|s| s.status)
                .and_then(|s| s.phase)
                == Some(Phase::Running)
        },
    )
    .await;
    let output = running.await.expect("the command");
    assert_eq!(text(&output.stdout), "done\n", "{}", describe(&output));
    // Once it ended the Sandbox is idle, and its idle timeout suspends it.
    wait_phase(&world.env.ctx, "busy", Phase::Suspended).await;
}

#[tokio::test]
async fn files_round_trip_large_binary() {
    let Some(world) = world("runtime_files").await else {
        return;
    };
    world.running(&world.sandbox("files", Some("gvisor"))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sent = dir.path().join("sent.bin");
    let mut data = vec![0u8; 64 << 20];
    let mut state = 0x2545f4914f6cdd1du64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&sent, &data).expect("write");
    let remote = format!("{}:/workspace/in/big.bin", world.target("files"));
    let up = world.cli(&["cp", path(&sent), &remote], None).await;
    assert!(up.status.success(), "{}", describe(&up));
    // Inside, the container's own tools see the same bytes.
    let inside = world
        .exec("files", &["sha256sum", "/workspace/in/big.bin"])
        .await;
    let digest = sha256_hex(&data);
    assert!(
        text(&inside.stdout).starts_with(&digest),
        "{}",
        describe(&inside)
    );
    let back = dir.path().join("back.bin");
    let down = world.cli(&["cp", &remote, path(&back)], None).await;
    assert!(down.status.success(), "{}", describe(&down));
    assert_eq!(sha256_hex(&std::fs::read(&back).expect("read")), digest);
    let missing = format!("{}:/workspace/none", world.target("files"));
    let failed = world
        .cli(&["cp", &missing, path(&dir.path().join("x"))], None)
        .await;
    assert!(
        !failed.status.success() && text(&failed.stderr).contains("404"),
        "{}",
        describe(&failed)
    );
    assert!(
        !dir.path().join("x").exists(),
        "a failed download leaves no file"
    );
}

#[tokio::test]
async fn pty_resize_and_input() {
    let Some(world) = world("runtime_pty").await else {
        return;
    };
    world.running(&world.sandbox("term", Some("gvisor"))).await;
    let target = world.target("term");
    let output = world
        .cli(
            &["exec", "-t", &target, "--", "sh"],
            Some(b"stty size; tty\nexit 4\n"),
        )
        .await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{}", describe(&output));
    assert!(stdout.contains("24 80"), "{stdout}");
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    // Input to a background command, and its output followed later.
    let started = world
        .cli(
            &[
                "exec",
                "-d",
                "--tag",
                "counter",
                &target,
                "--",
                "sh",
                "-c",
                "for i in $(seq 1 3); do echo tick $i; done; sleep 2",
            ],
            None,
        )
        .await;
    assert!(started.status.success(), "{}", describe(&started));
    let logs = world
        .cli(&["logs", &target, "--tag", "counter"], None)
        .await;
    assert!(text(&logs.stdout).contains("tick 3"), "{}", describe(&logs));
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn sha256_hex(bytes: &[u8]) -> String {
    sandman::distribution::sha256_hex(bytes)
}

/// A runtime call's response stream, read message by message as it comes.
struct Messages {
    body: hyper::body::Incoming,
    envelopes: sandman_connect::Envelopes,
}

impl Messages {
    /// The next message; `None` once the stream ended (its end-of-stream message).
    async fn next(&mut self) -> Option<serde_json::Value> {
        use http_body_util::BodyExt;
        loop {
            match self.envelopes.take().expect("an envelope") {
                Some(sandman_connect::Envelope::Message(json)) => {
                    return Some(serde_json::from_slice(&json).expect("json"));
                }
                Some(sandman_connect::Envelope::End(_)) => return None,
                None => {
                    let frame = self.body.frame().await?.expect("frame");
                    if let Ok(data) = frame.into_data() {
                        self.envelopes.push(&data);
                    }
                }
            }
        }
    }
}

/// A streaming runtime call through the gateway at `path` (from its root), with `headers`
/// naming the Sandbox and its token: the status and, on 200, the stream.
async fn gateway_stream(
    world: &World,
    path: &str,
    headers: &[(&str, &str)],
    message: serde_json::Value,
) -> (u16, Messages) {
    let http: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut request = http::Request::post(format!("http://{}{path}", world.gateway.addr))
        .header("content-type", "application/connect+json")
        .header("e2b-sandbox-port", "49983");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(
            sandman_connect::request_envelope(&message),
        ))
        .expect("request");
    let response = http.request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let messages = Messages {
        body: response.into_body(),
        envelopes: sandman_connect::Envelopes::default(),
    };
    (status, messages)
}

#[tokio::test]
async fn watch_reports_a_written_file() {
    let Some(world) = world("runtime_watch").await else {
        return;
    };
    world
        .running(&world.sandbox("watched", Some("gvisor")))
        .await;
    let made = world
        .exec("watched", &["mkdir", "-p", "/workspace/w"])
        .await;
    assert!(made.status.success(), "{}", describe(&made));
    let token = world.token("watched").await;
    let path = format!(
        "/sandboxes/{}/watched/filesystem.Filesystem/WatchDir",
        world.env.ctx.namespace
    );
    let (status, mut watch) = gateway_stream(
        &world,
        &path,
        &[("x-access-token", &token)],
        serde_json::json!({ "path": "/workspace/w" }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(watch.next().await, Some(serde_json::json!({ "start": {} })));
    let wrote = world
        .exec("watched", &["sh", "-c", "echo hi > /workspace/w/new.txt"])
        .await;
    assert!(wrote.status.success(), "{}", describe(&wrote));
    let event = watch.next().await.expect("an event");
    assert_eq!(event["filesystem"]["name"], "new.txt", "{event}");
    assert_eq!(event["filesystem"]["type"], "EVENT_TYPE_CREATE", "{event}");
}

#[tokio::test]
async fn e2b_headers_route_to_the_sandbox() {
    use base64::Engine;
    let Some(world) = world("runtime_e2b_headers").await else {
        return;
    };
    world.running(&world.sandbox("headed", None)).await;
    let token = world.token("headed").await;
    let echo = serde_json::json!({ "process": { "cmd": "echo", "args": ["by id"] } });
    // As E2B's SDKs send it: the gateway's root, the Sandbox named by its id and port.
    let id = sandman::api::sandbox_id(&world.env.ctx.namespace, "headed");
    let headers = [("e2b-sandbox-id", id.as_str()), ("x-access-token", &token)];
    let (status, mut started) =
        gateway_stream(&world, "/process.Process/Start", &headers, echo.clone()).await;
    assert_eq!(status, 200);
    let mut output = Vec::new();
    while let Some(message) = started.next().await {
        if let Some(text) = message["event"]["data"]["stdout"].as_str() {
            output.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .expect("base64"),
            );
        }
    }
    assert_eq!(String::from_utf8_lossy(&output), "by id\n");
    let unknown = sandman::api::sandbox_id(&world.env.ctx.namespace, "nobody");
    let headers = [
        ("e2b-sandbox-id", unknown.as_str()),
        ("x-access-token", &token),
    ];
    let (status, _) = gateway_stream(&world, "/process.Process/Start", &headers, echo).await;
    assert_eq!(status, 404);
}
