//! Scale harness: create N Sandboxes at once on the local control plane and report the time
//! until all are Ready, the API writes per Sandbox and the operator's peak RSS.
//!
//! ```sh
//! cargo bench --bench scale                      # 500 Sandboxes, 3 rounds
//! SANDMAN_SCALE_N=100 SANDMAN_SCALE_ROUNDS=1 cargo bench --bench scale
//! SANDMAN_SCALE_VOLUMES=0 cargo bench --bench scale    # without a volume per Sandbox
//! SANDMAN_SCALE_N=10000 SANDMAN_SCALE_ROUNDS=1 SANDMAN_SCALE_VOLUMES=0 \
//!   SANDMAN_SCALE_IDLE_SECONDS=60 cargo bench --bench scale   # ten thousand, then idle
//! SANDMAN_SCALE_OPERATOR_WRAPPER="heaptrack -o /tmp/operator" \
//!   cargo bench --bench scale --no-default-features   # heaptrack sees malloc, not jemalloc
//!   # where the operator's memory goes (heaptrack_print /tmp/operator.zst)
//! SANDMAN_SCALE_CONTROLLER=agent-sandbox SANDMAN_SCALE_VOLUMES=0 cargo bench --bench scale
//!   # agent-sandbox's controller instead, under the same harness (see agent_sandbox.rs)
//! ```
//!
//! Also reported: Sandboxes per second, Events per Sandbox by reason, the API server's CPU
//! seconds and peak RSS over the round, and, with `SANDMAN_SCALE_IDLE_SECONDS`, the
//! operator's CPU over that long once all are Ready and nothing changes.
//!
//! Writes are counted from the API server's own `apiserver_request_total`, as the difference
//! before and after a round. Not a test: nothing here asserts a timing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use sandman::api::{Phase, Sandbox};
use sandman_testenv::apiserver::{self, Counts};
use sandman_testenv::{ControlPlane, Options};

#[path = "scale/agent_sandbox.rs"]
mod agent_sandbox;

/// The controller measured: sandman's operator, or agent-sandbox's for the side-by-side rows.
enum Subject {
    Sandman,
    AgentSandbox(agent_sandbox::Installed),
}

impl Subject {
    fn from_env() -> Self {
        match std::env::var("SANDMAN_SCALE_CONTROLLER").as_deref() {
            Ok("agent-sandbox") => Subject::AgentSandbox(agent_sandbox::install()),
            Ok("sandman") | Err(_) => Subject::Sandman,
            Ok(other) => panic!("SANDMAN_SCALE_CONTROLLER={other}: sandman or agent-sandbox"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Subject::Sandman => "sandman",
            Subject::AgentSandbox(_) => "agent-sandbox",
        }
    }

    /// Who its Events are from.
    fn reporter(&self) -> &'static str {
        match self {
            Subject::Sandman => "sandman",
            Subject::AgentSandbox(_) => agent_sandbox::REPORTER,
        }
    }

    fn resource(&self) -> ApiResource {
        match self {
            Subject::Sandman => ApiResource::erase::<Sandbox>(&()),
            Subject::AgentSandbox(_) => agent_sandbox::resource(),
        }
    }

    /// One of the Sandboxes the round creates.
    fn sandbox(&self, name: &str, volumes: bool) -> DynamicObject {
        match self {
            Subject::Sandman => serde_json::to_value(sandbox(name, volumes))
                .and_then(serde_json::from_value)
                .expect("a Sandbox as a dynamic object"),
            Subject::AgentSandbox(_) => agent_sandbox::sandbox(name),
        }
    }

    fn is_write(&self, verb: &str, resource: &str, subresource: &str) -> bool {
        match self {
            Subject::Sandman => is_sandman_write(verb, resource, subresource),
            Subject::AgentSandbox(_) => agent_sandbox::is_write(verb, resource, subresource),
        }
    }
}

fn main() {
    let n: usize = env_number("SANDMAN_SCALE_N", 500);
    let rounds: usize = env_number("SANDMAN_SCALE_ROUNDS", 3);
    let volumes = env_number("SANDMAN_SCALE_VOLUMES", 1) > 0;
    let subject = Subject::from_env();
    assert!(
        !volumes || matches!(subject, Subject::Sandman),
        "agent-sandbox rounds have no volumes: set SANDMAN_SCALE_VOLUMES=0"
    );
    let dir = std::env::temp_dir().join(format!("sandman-scale-{}", std::process::id()));
    let mut options = Options::new(&dir);
    // kwok's fake nodes hold 1000 pods each.
    options.nodes = env_number("SANDMAN_SCALE_NODES", (n / 900 + 3).clamp(3, 16));
    options.crds_dir = Some(match &subject {
        Subject::Sandman => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"),
        Subject::AgentSandbox(installed) => installed.crds.clone(),
    });
    let mut plane = ControlPlane::start(&options).expect("start the local control plane");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut results = Vec::new();
    for round in 0..rounds {
        let result = runtime.block_on(run_round(&plane, &subject, n, round, volumes));
        eprintln!(
            "round {round}: {n} Sandboxes Ready in {:.2}s; {:.2} controller writes/Sandbox (+{:.2} Events); controller peak RSS {} MiB",
            result.seconds,
            result.sandman_writes,
            result.sandman_events,
            result.peak_rss_kib / 1024
        );
        results.push(result);
    }
    plane.stop();
    let _ = std::fs::remove_dir_all(&dir);
    report(&subject, n, volumes, &results);
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct RoundResult {
    seconds: f64,
    sandman_writes: f64,
    sandman_events: f64,
    events_by_reason: std::collections::BTreeMap<String, f64>,
    peak_rss_kib: u64,
    writes: Counts,
    /// The API server's CPU seconds over the round, and its RSS (KiB) at the end.
    apiserver_cpu: f64,
    apiserver_rss_kib: u64,
    /// The operator's CPU share (percent of one core) while idle, when measured.
    idle_cpu_percent: Option<f64>,
}

async fn run_round(
    plane: &ControlPlane,
    subject: &Subject,
    n: usize,
    round: usize,
    volumes: bool,
) -> RoundResult {
    let client = sandman_testenv::client_from_kubeconfig(plane.kubeconfig())
        .await
        .expect("client");
    let namespace = format!("scale-{round}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": namespace } }))
            .expect("namespace");
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .expect("create namespace");
    wait_for_default_service_account(&client, &namespace).await;

    let mut operator = match subject {
        Subject::Sandman => start_operator(plane, &namespace),
        Subject::AgentSandbox(installed) => agent_sandbox::start(installed, plane.kubeconfig()),
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let apiserver_pid = plane
        .state()
        .processes
        .iter()
        .find(|p| p.name == "kube-apiserver")
        .map(|p| p.pid)
        .expect("the API server's pid");
    let apiserver_cpu_before = cpu_seconds(apiserver_pid);
    let before = apiserver::write_counts(&client).await;
    let started = Instant::now();
    create_all(&client, subject, &namespace, n, volumes).await;
    // A list of ten thousand is itself work for the API server: ask less often then.
    let every = Duration::from_millis(if n > 1000 { 2000 } else { 100 });
    while ready_count(&client, subject, &namespace).await < n {
        tokio::time::sleep(every).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Let in-flight status writes and Events land before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = apiserver::write_counts(&client).await;
    let apiserver_cpu = cpu_seconds(apiserver_pid) - apiserver_cpu_before;
    let apiserver_rss_kib = status_kib(apiserver_pid, "VmRSS:");
    let idle_cpu_percent = match env_number("SANDMAN_SCALE_IDLE_SECONDS", 0) {
        0 => None,
        idle => {
            let from = cpu_seconds(operator.id());
            tokio::time::sleep(Duration::from_secs(idle as u64)).await;
            Some((cpu_seconds(operator.id()) - from) / idle as f64 * 100.0)
        }
    };
    let peak_rss_kib = peak_rss_kib(operator.id());
    stop_operator(&mut operator);

    let writes: Counts = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let sandman_writes: f64 = writes
        .iter()
        .filter(|((verb, resource, subresource), _)| subject.is_write(verb, resource, subresource))
        .map(|(_, v)| v)
        .sum::<f64>()
        / n as f64;
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let mut events_by_reason = std::collections::BTreeMap::<String, f64>::new();
    for event in events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(subject.reporter()))
    {
        let count = f64::from(event.series.as_ref().map_or(1, |s| s.count));
        *events_by_reason
            .entry(event.reason.clone().unwrap_or_default())
            .or_default() += count / n as f64;
    }
    let sandman_events = events_by_reason.values().fold(0.0, |all, n| all + n);
    RoundResult {
        seconds,
        sandman_writes,
        sandman_events,
        events_by_reason,
        peak_rss_kib,
        writes,
        apiserver_cpu,
        apiserver_rss_kib,
        idle_cpu_percent,
    }
}

/// Creates the N Sandboxes, 64 at a time.
async fn create_all(client: &Client, subject: &Subject, namespace: &str, n: usize, volumes: bool) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &subject.resource());
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let object = subject.sandbox(&format!("sbx-{i}"), volumes);
            async move {
                api.create(&PostParams::default(), &object)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .expect("create sandboxes");
}

/// How many of the Sandboxes are Ready, as their controller says it.
async fn ready_count(client: &Client, subject: &Subject, namespace: &str) -> usize {
    match subject {
        Subject::Sandman => Api::<Sandbox>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .expect("list sandboxes")
            .items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Running))
            .count(),
        Subject::AgentSandbox(_) => Api::<DynamicObject>::namespaced_with(
            client.clone(),
            namespace,
            &agent_sandbox::resource(),
        )
        .list(&ListParams::default())
        .await
        .expect("list sandboxes")
        .items
        .iter()
        .filter(|s| agent_sandbox::ready(s))
        .count(),
    }
}

/// Writes only sandman makes: the scheduler binds pods (pods/binding), kwok writes pods/status,
/// and the PV binder updates claims with PUT, so none of them use these verbs on these
/// resources.
fn is_sandman_write(verb: &str, resource: &str, subresource: &str) -> bool {
    matches!(
        (verb, resource, subresource),
        ("APPLY" | "PATCH", "sandboxes", "status")
            | ("POST" | "DELETE", "pods", "")
            | ("APPLY", "services", "")
            | ("APPLY", "persistentvolumeclaims", "")
    )
}

fn sandbox(name: &str, volume: bool) -> Sandbox {
    let mut value = serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": { "name": name },
        "spec": {
            "podTemplate": { "spec": { "containers": [{
                "name": "agent", "image": "registry.example/agent:1",
                "volumeMounts": [{ "name": "workspace", "mountPath": "/workspace" }]
            }] } },
            "volumeClaimTemplates": [{
                "metadata": { "name": "workspace" },
                "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
            }]
        }
    });
    if !volume {
        value["spec"]["volumeClaimTemplates"] = serde_json::json!([]);
        value["spec"]["podTemplate"]["spec"]["containers"][0]["volumeMounts"] =
            serde_json::json!([]);
    }
    serde_json::from_value(value).expect("sandbox")
}

/// The operator, under `SANDMAN_SCALE_OPERATOR_WRAPPER` when set (a profiler's command, for
/// example `heaptrack -o /tmp/operator`; the RSS figures are then the wrapper's, not the
/// operator's).
fn start_operator(plane: &ControlPlane, namespace: &str) -> Child {
    let wrapper = std::env::var("SANDMAN_SCALE_OPERATOR_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(env!("CARGO_BIN_EXE_sandman"));
            // A group of its own, so that the operator under it can be stopped with it.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_sandman")),
    };
    command
        .args([
            "run",
            "--namespace",
            namespace,
            "--concurrency",
            "64",
            "--metrics-listen",
            "off",
        ])
        .env("KUBECONFIG", plane.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the operator")
}

/// Stops the operator. Under a wrapper, the operator is the wrapper's child, and a profiler
/// writes its data only after the operator ends: SIGTERM goes to the operator alone (the
/// profiler's own helpers in the group must outlive it to flush), then the wrapper is awaited.
fn stop_operator(operator: &mut Child) {
    if std::env::var("SANDMAN_SCALE_OPERATOR_WRAPPER").is_ok_and(|w| !w.trim().is_empty()) {
        for pid in operators_in_group(operator.id()) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        for _ in 0..1200 {
            if matches!(operator.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = operator.kill();
    let _ = operator.wait();
}

/// The processes of a process group that run the operator's binary.
fn operators_in_group(group: u32) -> Vec<u32> {
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_sandman")).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command's closing parenthesis: state, ppid, pgrp, …
            let pgrp = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
            pgrp == Some(group)
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary)
        })
        .collect()
}

async fn wait_for_default_service_account(client: &Client, namespace: &str) {
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    for _ in 0..300 {
        if matches!(accounts.get_opt("default").await, Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no default ServiceAccount in {namespace}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A `/proc/<pid>/status` figure in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User and system CPU seconds of a process so far (`/proc/<pid>/stat`, in clock ticks).
fn cpu_seconds(pid: u32) -> f64 {
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
    let ticks = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it are fixed.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name and state.
    (field(11) + field(12)) / ticks
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(subject: &Subject, n: usize, volumes: bool, results: &[RoundResult]) {
    println!(
        "\n## Scale ({}): {n} Sandboxes at once, {} rounds, a volume each: {volumes}\n",
        subject.name(),
        results.len()
    );
    println!("| figure | median | all rounds |\n|---|---|---|");
    let row = |name: &str, values: Vec<f64>, unit: &str| {
        let all: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
        println!(
            "| {name} | {:.2} {unit} | {} |",
            median(values.clone()),
            all.join(", ")
        );
    };
    row(
        "time until all Ready",
        results.iter().map(|r| r.seconds).collect(),
        "s",
    );
    row(
        "controller writes per Sandbox (Sandbox and its status, Pod, Service, PVC)",
        results.iter().map(|r| r.sandman_writes).collect(),
        "",
    );
    row(
        "controller Events per Sandbox",
        results.iter().map(|r| r.sandman_events).collect(),
        "",
    );
    row(
        "Sandboxes per second",
        results.iter().map(|r| n as f64 / r.seconds).collect(),
        "",
    );
    let reasons: std::collections::BTreeSet<&String> = results
        .iter()
        .flat_map(|r| r.events_by_reason.keys())
        .collect();
    for reason in reasons {
        row(
            &format!("  of which {reason} Events"),
            results
                .iter()
                .map(|r| r.events_by_reason.get(reason).copied().unwrap_or(0.0))
                .collect(),
            "",
        );
    }
    row(
        "API server CPU over the round",
        results.iter().map(|r| r.apiserver_cpu).collect(),
        "s",
    );
    row(
        "API server RSS at the end",
        results
            .iter()
            .map(|r| r.apiserver_rss_kib as f64 / 1024.0)
            .collect(),
        "MiB",
    );
    if results.iter().all(|r| r.idle_cpu_percent.is_some()) {
        row(
            "controller CPU while idle (percent of one core)",
            results.iter().filter_map(|r| r.idle_cpu_percent).collect(),
            "%",
        );
    }
    row(
        "controller peak RSS",
        results
            .iter()
            .map(|r| r.peak_rss_kib as f64 / 1024.0)
            .collect(),
        "MiB",
    );
    println!(
        "\nAll API writes in the median-time round, per Sandbox, by verb/resource/subresource:\n"
    );
    println!(
        "| verb | resource | subresource | per Sandbox | the controller's |\n|---|---|---|---|---|"
    );
    let mut by_time: Vec<&RoundResult> = results.iter().collect();
    by_time.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let middle = by_time[by_time.len() / 2];
    for ((verb, resource, subresource), count) in &middle.writes {
        println!(
            "| {verb} | {resource} | {subresource} | {:.2} | {} |",
            count / n as f64,
            if subject.is_write(verb, resource, subresource) {
                "yes"
            } else {
                ""
            }
        );
    }
}
