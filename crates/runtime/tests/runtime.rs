//! The runtime as a caller meets it: the binary started on loopback, spoken to over envd's
//! protocol (Connect with JSON) and `/files`.

#![allow(clippy::unwrap_used, clippy::zombie_processes)]

use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Runtime {
    child: std::process::Child,
    url: String,
    token: String,
    home: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    sandman_testenv::ports::free_loopback_port().unwrap()
}

async fn runtime() -> Runtime {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let token = format!("token-{port}");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sandman-runtime"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SANDMAN_RUNTIME_TOKEN", &token)
        .env("HOME", home.path())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("{url}/health")).send().await
            && r.status() == 204
        {
            return Runtime {
                child,
                url,
                token,
                home,
                http,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the runtime did not answer /health");
}

fn envelope(message: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(message).unwrap();
    let mut out = vec![0u8];
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// A stream's messages as they come; the last item is the end-of-stream message.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl Events {
    async fn next(&mut self) -> Option<(bool, Value)> {
        loop {
            if self.buffer.len() >= 5 {
                let length = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + length {
                    let end = self.buffer[0] & 2 != 0;
                    let json = serde_json::from_slice(&self.buffer[5..5 + length]).unwrap();
                    self.buffer.drain(..5 + length);
                    return Some((end, json));
                }
            }
            let chunk = self.body.next().await?.unwrap();
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// Everything up to the end of the stream: the output by kind, the end event, and the
    /// end-of-stream message.
    async fn collect(mut self) -> (String, String, Value, Value) {
        let (mut stdout, mut stderr, mut end) = (Vec::new(), Vec::new(), Value::Null);
        while let Some((last, message)) = self.next().await {
            if last {
                return (
                    String::from_utf8_lossy(&stdout).into_owned(),
                    String::from_utf8_lossy(&stderr).into_owned(),
                    end,
                    message,
                );
            }
            let event = &message["event"];
            for (kind, into) in [
                ("stdout", &mut stdout),
                ("stderr", &mut stderr),
                ("pty", &mut Vec::new()),
            ] {
                if let Some(text) = event["data"][kind].as_str() {
                    into.extend(
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .unwrap(),
                    );
                }
            }
            if !event["end"].is_null() {
                end = event["end"].clone();
            }
        }
        panic!("the stream ended without an end-of-stream message");
    }
}

impl Runtime {
    async fn stream(&self, method: &str, message: Value, headers: &[(&str, &str)]) -> Events {
        let mut request = self
            .http
            .post(format!("{}/{method}", self.url))
            .header("content-type", "application/connect+json")
            .header("x-access-token", &self.token)
            .body(envelope(&message));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        Events {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
        }
    }

    async fn unary(&self, method: &str, message: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/{method}", self.url))
            .header("content-type", "application/json")
            .header("x-access-token", &self.token)
            .json(&message)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn run(&self, script: &str) -> (String, String, Value, Value) {
        let start = json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}});
        self.stream("process.Process/Start", start, &[])
            .await
            .collect()
            .await
    }

    async fn pids(&self) -> Vec<u64> {
        let (_, list) = self.unary("process.Process/List", json!({})).await;
        list["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pid"].as_u64().unwrap())
            .collect()
    }
}

#[tokio::test]
async fn exec_streams_output_and_exit_code() {
    let runtime = runtime().await;
    let (stdout, stderr, end, last) = runtime
        .run("echo out; echo err >&2; printf \"$HOME\"; exit 3")
        .await;
    assert_eq!(stdout, format!("out\n{}", runtime.home.path().display()));
    assert_eq!(stderr, "err\n");
    assert_eq!(end["exitCode"], 3);
    assert_eq!(end["exited"], true);
    assert_eq!(end["status"], "exit status 3");
    assert_eq!(last, json!({}));
    // The token is the runtime's, never a command's.
    let (stdout, ..) = runtime.run("echo \"[$SANDMAN_RUNTIME_TOKEN]\"").await;
    assert_eq!(stdout, "[]\n");
}

#[tokio::test]
async fn stdin_signals_timeouts_and_reconnect() {
    let runtime = runtime().await;
    // stdin: input comes through, and closing it ends `cat`.
    let start = json!({"process": {"cmd": "cat"}, "stdin": true});
    let mut events = runtime.stream("process.Process/Start", start, &[]).await;
    let (_, first) = events.next().await.unwrap();
    let pid = first["event"]["start"]["pid"].as_u64().unwrap();
    let input = base64::engine::general_purpose::STANDARD.encode("hello\n");
    let (status, _) = runtime
        .unary(
            "process.Process/SendInput",
            json!({"process": {"pid": pid}, "input": {"stdin": input}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = runtime
        .unary(
            "process.Process/CloseStdin",
            json!({"process": {"pid": pid}}),
        )
        .await;
    assert_eq!(status, 200);
    let (stdout, _, end, _) = events.collect().await;
    assert_eq!(
        (stdout.as_str(), end["exitCode"].as_i64()),
        ("hello\n", Some(0))
    );

    // A timeout kills the command and says so.
    let start = json!({"process": {"cmd": "sleep", "args": ["600"]}});
    let events = runtime
        .stream(
            "process.Process/Start",
            start,
            &[("connect-timeout-ms", "300")],
        )
        .await;
    let (_, _, end, last) = events.collect().await;
    assert_eq!(end["status"], "signal: killed");
    assert_eq!(last["error"]["code"], "deadline_exceeded", "{last}");

    // A background command outlives its stream: listed, reconnected by tag with its recent
    // output, and ended by a signal.
    let start = json!({"process": {"cmd": "/bin/sh", "args": ["-c", "echo ready; exec sleep 600"]}, "tag": "bg"});
    let mut events = runtime.stream("process.Process/Start", start, &[]).await;
    let (_, first) = events.next().await.unwrap();
    let pid = first["event"]["start"]["pid"].as_u64().unwrap();
    drop(events);
    assert!(runtime.pids().await.contains(&pid));
    let events = runtime
        .stream(
            "process.Process/Connect",
            json!({"process": {"tag": "bg"}}),
            &[],
        )
        .await;
    let (status, _) = runtime
        .unary(
            "process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!(status, 200);
    let (stdout, _, end, _) = events.collect().await;
    assert_eq!(stdout, "ready\n");
    assert_eq!(end["status"], "signal: killed");
    assert!(!runtime.pids().await.contains(&pid));
    let (status, error) = runtime
        .unary(
            "process.Process/SendSignal",
            json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn pty_resize_and_input() {
    let runtime = runtime().await;
    let start = json!({"process": {"cmd": "/bin/sh"}, "pty": {"size": {"cols": 80, "rows": 24}}});
    let mut events = runtime.stream("process.Process/Start", start, &[]).await;
    let (_, first) = events.next().await.unwrap();
    let pid = first["event"]["start"]["pid"].as_u64().unwrap();
    let send = |text: &str| json!({"process": {"pid": pid}, "input": {"pty": base64::engine::general_purpose::STANDARD.encode(text)}});
    let mut seen = String::new();
    let read_until = async |events: &mut Events, needle: &str, seen: &mut String| {
        while !seen.contains(needle) {
            let (last, message) = events.next().await.unwrap();
            assert!(!last, "the shell ended early: {message}");
            if let Some(text) = message["event"]["data"]["pty"].as_str() {
                seen.push_str(&String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .unwrap(),
                ));
            }
        }
    };
    runtime
        .unary("process.Process/SendInput", send("stty size; tty\n"))
        .await;
    read_until(&mut events, "24 80", &mut seen).await;
    read_until(&mut events, "/dev/pts/", &mut seen).await;
    let (status, _) = runtime
        .unary(
            "process.Process/Update",
            json!({"process": {"pid": pid}, "pty": {"size": {"cols": 100, "rows": 30}}}),
        )
        .await;
    assert_eq!(status, 200);
    runtime
        .unary("process.Process/SendInput", send("stty size\n"))
        .await;
    read_until(&mut events, "30 100", &mut seen).await;
    runtime
        .unary("process.Process/SendInput", send("exit 7\n"))
        .await;
    let (_, _, end, _) = events.collect().await;
    assert_eq!(end["exitCode"], 7);
}

#[tokio::test]
async fn files_round_trip_large_binary() {
    let runtime = runtime().await;
    let mut data = vec![0u8; 64 << 20];
    let mut state = 0x9e3779b97f4a7c15u64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let sent = Sha256::digest(&data);
    // Multipart, as the SDKs before envd 0.5.7 send it, to a path under a new directory.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data.clone()).file_name("big.bin"),
    );
    let response = runtime
        .http
        .post(format!("{}/files?path=deep/dir/big.bin", runtime.url))
        .header("x-access-token", &runtime.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let stored = runtime.home.path().join("deep/dir/big.bin");
    assert_eq!(answer[0]["path"], stored.display().to_string());
    let response = runtime
        .http
        .get(format!("{}/files?path={}", runtime.url, stored.display()))
        .header("x-access-token", &runtime.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut hasher = Sha256::new();
    let mut length = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        length += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(length, data.len());
    assert_eq!(hasher.finalize(), sent);
    // Octet-stream (envd 0.5.7 and later), then stat, list, move and remove.
    let response = runtime
        .http
        .post(format!("{}/files?path=small.txt", runtime.url))
        .header("x-access-token", &runtime.token)
        .header("content-type", "application/octet-stream")
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, stat) = runtime
        .unary("filesystem.Filesystem/Stat", json!({"path": "small.txt"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(stat["entry"]["size"], "5");
    assert_eq!(stat["entry"]["type"], "FILE_TYPE_FILE");
    assert_eq!(stat["entry"]["permissions"].as_str().unwrap().len(), 10);
    let (_, listed) = runtime
        .unary(
            "filesystem.Filesystem/ListDir",
            json!({"path": "", "depth": 3}),
        )
        .await;
    let names: Vec<&str> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deep", "dir", "big.bin", "small.txt"]);
    let (status, moved) = runtime
        .unary(
            "filesystem.Filesystem/Move",
            json!({"source": "small.txt", "destination": "b/moved.txt"}),
        )
        .await;
    assert_eq!(
        (status, moved["entry"]["name"].as_str()),
        (200, Some("moved.txt"))
    );
    let (status, _) = runtime
        .unary("filesystem.Filesystem/MakeDir", json!({"path": "b"}))
        .await;
    assert_eq!(
        status, 409,
        "MakeDir of an existing directory is already_exists"
    );
    let (status, _) = runtime
        .unary("filesystem.Filesystem/Remove", json!({"path": "b"}))
        .await;
    assert_eq!(status, 200);
    let (status, missing) = runtime
        .unary("filesystem.Filesystem/Stat", json!({"path": "b/moved.txt"}))
        .await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("not_found")));
    let response = runtime
        .http
        .get(format!("{}/files?path=nothing-here", runtime.url))
        .header("x-access-token", &runtime.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], 404);
}

#[tokio::test]
async fn watch_reports_a_written_file() {
    let runtime = runtime().await;
    std::fs::create_dir(runtime.home.path().join("w")).unwrap();
    let mut events = runtime
        .stream("filesystem.Filesystem/WatchDir", json!({"path": "w"}), &[])
        .await;
    let (_, first) = events.next().await.unwrap();
    assert_eq!(first, json!({"start": {}}));
    runtime.run("echo hi > w/new.txt").await;
    let (last, message) = events.next().await.unwrap();
    assert!(!last);
    assert_eq!(message["filesystem"]["name"], "new.txt");
    assert_eq!(message["filesystem"]["type"], "EVENT_TYPE_CREATE");
    // Polled watchers see the same.
    let (_, created) = runtime
        .unary("filesystem.Filesystem/CreateWatcher", json!({"path": "w"}))
        .await;
    let id = created["watcherId"].as_str().unwrap().to_string();
    runtime.run("rm w/new.txt").await;
    let mut kinds = Vec::new();
    while !kinds.contains(&"EVENT_TYPE_REMOVE".to_string()) {
        let (_, polled) = runtime
            .unary(
                "filesystem.Filesystem/GetWatcherEvents",
                json!({"watcherId": id}),
            )
            .await;
        kinds.extend(
            polled["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_string()),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = runtime
        .unary(
            "filesystem.Filesystem/RemoveWatcher",
            json!({"watcherId": id}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn runtime_refuses_requests_without_the_token() {
    let runtime = runtime().await;
    for token in [None, Some("wrong"), Some("")] {
        let mut calls = vec![
            runtime
                .http
                .post(format!("{}/process.Process/List", runtime.url))
                .json(&json!({})),
            runtime
                .http
                .get(format!("{}/files?path=/etc/passwd", runtime.url)),
            runtime
                .http
                .post(format!("{}/files?path=x", runtime.url))
                .body("x"),
            runtime
                .http
                .post(format!("{}/process.Process/Start", runtime.url))
                .header("content-type", "application/connect+json")
                .body(envelope(
                    &json!({"process": {"cmd": "touch", "args": ["pwned"]}}),
                )),
        ];
        for call in calls.drain(..) {
            let call = match token {
                Some(t) => call.header("x-access-token", t),
                None => call,
            };
            let response = call.send().await.unwrap();
            assert_eq!(response.status(), 401, "token {token:?}");
        }
    }
    assert!(!runtime.home.path().join("pwned").exists());
    assert!(!runtime.home.path().join("x").exists());
    // Without a token the runtime does not start at all.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sandman-runtime"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("SANDMAN_RUNTIME_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no access token"));
}

#[tokio::test]
async fn hostile_input_gets_errors_and_the_runtime_stays_up() {
    let runtime = runtime().await;
    let post = |path: &str, content_type: &str, body: Vec<u8>| {
        runtime
            .http
            .post(format!("{}/{path}", runtime.url))
            .header("x-access-token", &runtime.token)
            .header("content-type", content_type.to_string())
            .body(body)
            .send()
    };
    // An envelope that claims 4 GiB is refused from its header alone.
    let response = post(
        "process.Process/Start",
        "application/connect+json",
        vec![0, 0xff, 0xff, 0xff, 0xff, b'{'],
    )
    .await
    .unwrap();
    let bytes = response.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("resource_exhausted"));
    // A truncated envelope, JSON that is not a request, a unary body over the limit.
    let response = post(
        "process.Process/Start",
        "application/connect+json",
        vec![0, 0, 0, 0, 9, b'{'],
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&response.bytes().await.unwrap()).contains("invalid_argument"));
    let response = post(
        "filesystem.Filesystem/Stat",
        "application/json",
        b"[1,2".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let response = post(
        "filesystem.Filesystem/Stat",
        "application/json",
        vec![b' '; 5 << 20],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 429);
    let response = post("process.Process/Nope", "application/json", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 501);
    // A command that floods stdout, read slowly and then dropped: the runtime keeps serving.
    let start = json!({"process": {"cmd": "/bin/sh", "args": ["-c", "yes flood"]}, "tag": "flood"});
    let mut events = runtime.stream("process.Process/Start", start, &[]).await;
    for _ in 0..50 {
        events.next().await.unwrap();
    }
    drop(events);
    let (stdout, ..) = runtime.run("echo still-here").await;
    assert_eq!(stdout, "still-here\n");
    let (_, list) = runtime.unary("process.Process/List", json!({})).await;
    let flood = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tag"] == "flood")
        .unwrap()
        .clone();
    runtime
        .unary(
            "process.Process/SendSignal",
            json!({"process": {"pid": flood["pid"]}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    // `..` cannot climb above the root, and a command that does not exist is an error.
    let (status, stat) = runtime
        .unary(
            "filesystem.Filesystem/Stat",
            json!({"path": "../../../../../../../../"}),
        )
        .await;
    assert_eq!((status, stat["entry"]["path"].as_str()), (200, Some("/")));
    let start = json!({"process": {"cmd": "/no/such/command"}});
    let (_, _, _, last) = runtime
        .stream("process.Process/Start", start, &[])
        .await
        .collect()
        .await;
    assert_eq!(last["error"]["code"], "invalid_argument", "{last}");
    assert_eq!(
        runtime
            .http
            .get(format!("{}/health", runtime.url))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
}
