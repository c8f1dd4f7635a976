//! `sandman policy eval/test/inspect/push`, run as the built binary against real components.

use std::path::Path;
use std::process::Command;

mod common;

use common::cli::*;
use sandman_testenv::harness::{registry, repo_root};
use sandman_testenv::policies::policy_wasm_path;

#[test]
fn example_policies_pass_their_test_suites() {
    for (suite, crate_name) in [
        ("untrusted-to-gvisor", "untrusted_to_gvisor"),
        ("tenant-resource-defaults", "tenant_resource_defaults"),
        ("idle-suspend", "idle_suspend"),
    ] {
        let wasm = policy_wasm_path(crate_name);
        let output = sandman(&[
            "policy",
            "test",
            &format!("policies/tests/{suite}.yaml"),
            "--wasm",
            path_str(&wasm),
        ]);
        assert!(output.status.success(), "{suite}: {}", describe(&output));
        assert!(
            stdout(&output).contains(" 0 failed"),
            "{}",
            describe(&output)
        );
    }
}

#[test]
fn failing_case_is_reported_and_exits_nonzero() {
    let dir = scratch("failing");
    let suite = dir.join("suite.yaml");
    let wasm = policy_wasm_path("untrusted_to_gvisor");
    std::fs::write(
        &suite,
        format!(
            "policy: {}\ncases:\n  - name: expects kata\n    sandbox: {{ metadata: {{ labels: {{ sandman.dev/trust: untrusted }} }} }}\n    expect: {{ isolation: {{ runtimeClassName: kata }} }}\n  - name: expects abstain\n    expect: {{ isolation: null }}\n",
            wasm.display()
        ),
    )
    .expect("write suite");
    let output = sandman(&["policy", "test", path_str(&suite)]);
    assert!(!output.status.success(), "{}", describe(&output));
    let out = stdout(&output);
    assert!(
        out.contains("FAIL") && out.contains("expects kata"),
        "{out}"
    );
    assert!(out.contains("got {") && out.contains("gvisor"), "{out}");
    assert!(
        out.contains("PASS") && out.contains("expects abstain"),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");
}

#[test]
fn eval_prints_each_hook_as_yaml() {
    let dir = scratch("eval");
    let sandbox = dir.join("sandbox.yaml");
    std::fs::write(
        &sandbox,
        "metadata:\n  name: agent\n  labels: { sandman.dev/trust: untrusted }\n",
    )
    .expect("write sandbox");
    let wasm = policy_wasm_path("untrusted_to_gvisor");
    let output = sandman(&[
        "policy",
        "eval",
        "--policy",
        path_str(&wasm),
        "--sandbox",
        path_str(&sandbox),
        "--settings",
        r#"{"runtimeClassName": "kata"}"#,
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_yaml::from_str(&stdout(&output)).expect("YAML");
    assert_eq!(report["decisions"]["isolation"]["runtimeClassName"], "kata");
    assert!(
        report["decisions"].get("lifecycle").is_none(),
        "only the hooks the component exports: {report:?}"
    );

    let output = sandman(&[
        "policy",
        "eval",
        "--policy",
        "policies/idle-suspend/policy.yaml",
        "--wasm",
        path_str(&policy_wasm_path("idle_suspend")),
        "--sandbox",
        path_str(&sandbox),
        "--activity",
        "{idleSeconds: 4000}",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_yaml::from_str(&stdout(&output)).expect("YAML");
    assert_eq!(report["decisions"]["lifecycle"]["action"], "suspend");
}

#[test]
fn inspect_shows_hooks_contract_and_digest() {
    let wasm = policy_wasm_path("idle_suspend");
    let output = sandman(&["policy", "inspect", path_str(&wasm)]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_yaml::from_str(&stdout(&output)).expect("YAML");
    assert_eq!(report["contract"], "sandman:policy@0.3.0");
    assert_eq!(report["compatible"], true);
    assert_eq!(
        report["hooks"],
        serde_json::json!(["lifecycle"]),
        "the SDK exports only the hooks a policy names"
    );
    assert_eq!(
        report["sha256"],
        sandman::distribution::sha256_hex(&std::fs::read(&wasm).expect("wasm"))
    );
    assert!(
        report["imports"]
            .as_array()
            .expect("imports")
            .iter()
            .any(|i| i == "sandman:policy/types@0.3.0"),
        "{report}"
    );
}

/// How many components a run compiled and read from the cache, from the line every `policy
/// test` prints on stderr (the engine's own counters).
fn compile_counts(output: &std::process::Output) -> (u64, u64) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("machine code: "))
        .unwrap_or_else(|| panic!("no machine code line: {}", describe(output)));
    let parse = |n: &str| n.trim().parse::<u64>().ok();
    let counts = line.split_once(" compiled, ").and_then(|(compiled, rest)| {
        let (from_cache, _) = rest.split_once(" from the cache")?;
        Some((parse(compiled)?, parse(from_cache)?))
    });
    counts.unwrap_or_else(|| panic!("no counts in {line:?}"))
}

#[test]
fn cli_reuses_compiled_policies() {
    let cache = scratch("compile-cache");
    let wasm = policy_wasm_path("untrusted_to_gvisor");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_sandman"))
            .args([
                "policy",
                "test",
                "policies/tests/untrusted-to-gvisor.yaml",
                "--wasm",
                path_str(&wasm),
            ])
            .env("SANDMAN_POLICY_CACHE", &cache)
            .current_dir(repo_root())
            .output()
            .expect("run sandman")
    };
    let first = run();
    assert!(first.status.success(), "{}", describe(&first));
    // The suite tests the Wasm form and the CEL form: the component and the CEL engine.
    assert_eq!(compile_counts(&first), (2, 0), "{}", describe(&first));
    let second = run();
    assert!(second.status.success(), "{}", describe(&second));
    assert_eq!(
        compile_counts(&second),
        (0, 2),
        "the second run of an unchanged component compiles nothing: {}",
        describe(&second)
    );
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "the cache changes no result"
    );
    // Off means no cache: it compiles again, and says nothing was kept.
    let uncached = Command::new(env!("CARGO_BIN_EXE_sandman"))
        .args([
            "policy",
            "test",
            "policies/tests/untrusted-to-gvisor.yaml",
            "--wasm",
            path_str(&wasm),
        ])
        .env("SANDMAN_POLICY_CACHE", "off")
        .current_dir(repo_root())
        .output()
        .expect("run sandman");
    assert!(
        String::from_utf8_lossy(&uncached.stderr).contains("machine code: 2 compiled (no cache)"),
        "{}",
        describe(&uncached)
    );
}

#[test]
fn inspect_refuses_a_core_module() {
    let dir = scratch("core-module");
    let module = dir.join("core.wasm");
    // The smallest core module: magic and version 1.
    std::fs::write(&module, b"\0asm\x01\0\0\0").expect("write");
    let output = sandman(&["policy", "inspect", path_str(&module)]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("a core module, not a component"),
        "{}",
        describe(&output)
    );
}

#[test]
fn pushed_policy_evaluates_from_its_image_and_a_wrong_pin_is_refused() {
    let wasm = policy_wasm_path("untrusted_to_gvisor");
    let reference = format!("{}/cli/untrusted-to-gvisor:v1", registry().address());
    let output = sandman(&["policy", "push", path_str(&wasm), &reference]);
    assert!(output.status.success(), "{}", describe(&output));
    let out = stdout(&output);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let (image, sha256) = (field("image:"), field("sha256:"));
    assert!(image.contains("@sha256:"), "{image}");

    let dir = scratch("push");
    let sandbox = dir.join("sandbox.yaml");
    std::fs::write(
        &sandbox,
        "metadata:\n  labels: { sandman.dev/trust: untrusted }\n",
    )
    .expect("write sandbox");
    let manifest = |pin: &str| {
        let path = dir.join(format!("policy-{}.yaml", &pin[..8]));
        std::fs::write(
            &path,
            format!(
                "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: {{ name: from-registry }}\nspec:\n  wasm:\n    image: {image}\n    sha256: \"{pin}\"\n"
            ),
        )
        .expect("write policy");
        path
    };
    let pinned = manifest(&sha256);
    let output = sandman(&[
        "policy",
        "eval",
        "--policy",
        path_str(&pinned),
        "--sandbox",
        path_str(&sandbox),
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_yaml::from_str(&stdout(&output)).expect("YAML");
    assert_eq!(
        report["decisions"]["isolation"]["runtimeClassName"],
        "gvisor"
    );

    let wrong = manifest(&"1".repeat(64));
    let output = sandman(&[
        "policy",
        "eval",
        "--policy",
        path_str(&wrong),
        "--sandbox",
        path_str(&sandbox),
    ]);
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pins 1111"), "{stderr}");
}

/// The pooling allocator reserves about 1 TB of address space; under `ulimit -v` the engine
/// once failed to start at all. It falls back to allocating per evaluation, and says so.
#[test]
fn policy_engine_falls_back_where_address_space_is_limited() {
    let dir = scratch("ulimit");
    let sandbox = dir.join("sandbox.yaml");
    std::fs::write(
        &sandbox,
        "metadata:\n  name: agent\n  labels: { sandman.dev/trust: untrusted }\n",
    )
    .expect("write sandbox");
    let wasm = policy_wasm_path("untrusted_to_gvisor");
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 16777216 && exec "$0" policy eval --policy "$1" --sandbox "$2""#)
        .arg(env!("CARGO_BIN_EXE_sandman"))
        .arg(&wasm)
        .arg(&sandbox)
        .current_dir(repo_root())
        .output()
        .expect("run sandman under ulimit -v");
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_yaml::from_str(&stdout(&output)).expect("YAML");
    assert_eq!(
        report["decisions"]["isolation"]["runtimeClassName"],
        "gvisor"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot reserve the policy pool"),
        "{}",
        describe(&output)
    );
}

#[test]
fn suite_cases_read_their_sandbox_from_a_file() {
    let dir = scratch("sandbox-file");
    let wasm = policy_wasm_path("untrusted_to_gvisor");
    std::fs::write(
        dir.join("agent.yaml"),
        "apiVersion: sandman.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: agent\n  labels: { sandman.dev/trust: untrusted }\n",
    )
    .expect("write sandbox");
    let suite = dir.join("suite.yaml");
    std::fs::write(
        &suite,
        format!(
            "policy: {}\ncases:\n  - name: from the file\n    sandbox: {{ file: agent.yaml }}\n    expect: {{ isolation: {{ runtimeClassName: gvisor }} }}\n",
            wasm.display()
        ),
    )
    .expect("write suite");
    let output = sandman(&["policy", "test", path_str(&suite)]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stdout(&output).contains("1 passed, 0 failed"),
        "{}",
        describe(&output)
    );
    // A file that is not there is an error naming it, not a default Sandbox.
    std::fs::write(
        &suite,
        format!(
            "policy: {}\ncases:\n  - name: missing\n    sandbox: {{ file: nowhere.yaml }}\n    expect: {{ isolation: null }}\n",
            wasm.display()
        ),
    )
    .expect("write suite");
    let output = sandman(&["policy", "test", path_str(&suite)]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nowhere.yaml"),
        "{}",
        describe(&output)
    );
}

/// A manifest's `settingsSchema` is checked for every case's settings, in the Wasm and the CEL
/// form alike, before the policy's own checks: what misses it is refused with the failing
/// location, and what meets it loads and decides.
#[test]
fn settings_schema_is_enforced_in_suites() {
    let dir = scratch("settings-schema");
    let schema = "  settingsSchema:\n    type: object\n    properties:\n      idleSeconds: { type: integer, minimum: 1 }\n    additionalProperties: false\n";
    std::fs::write(
        dir.join("wasm.yaml"),
        format!(
            "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: {{ name: idle-wasm }}\nspec:\n{schema}  wasm:\n    configMap: {{ namespace: sandman-system, name: idle, key: policy.wasm }}\n    sha256: \"{}\"\n    settings: {{ idleSeconds: 1800 }}\n    limits: {{ timeout: 2s }}\n",
            "0".repeat(64)
        ),
    )
    .expect("write wasm manifest");
    std::fs::write(
        dir.join("cel.yaml"),
        format!(
            "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: {{ name: idle-cel }}\nspec:\n{schema}  cel:\n    settings: {{ idleSeconds: 1800 }}\n    lifecycle: \"activity.idleSeconds >= settings.idleSeconds ? {{'action': 'suspend', 'reason': 'idle'}} : null\"\n"
        ),
    )
    .expect("write cel manifest");
    let suite = dir.join("suite.yaml");
    std::fs::write(
        &suite,
        format!(
            "policies: [wasm.yaml, cel.yaml]\nwasm: {}\ncases:\n  - name: a string where the schema wants an integer\n    settings: {{ idleSeconds: soon }}\n    expect: {{ settings: {{ error: \"at /idleSeconds\" }} }}\n  - name: below the schema's minimum\n    settings: {{ idleSeconds: 0 }}\n    expect: {{ settings: {{ error: \"spec.settingsSchema\" }} }}\n  - name: a key the schema does not know\n    settings: {{ idleSeconds: 60, colour: red }}\n    expect: {{ settings: {{ error: colour }} }}\n  - name: settings that meet it load and decide\n    settings: {{ idleSeconds: 60 }}\n    activity: {{ idleSeconds: 3600 }}\n    expect: {{ lifecycle: {{ action: suspend }} }}\n",
            policy_wasm_path("idle_suspend").display()
        ),
    )
    .expect("write suite");
    let output = sandman(&["policy", "test", path_str(&suite)]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stdout(&output).contains("8 passed, 0 failed"),
        "{}",
        describe(&output)
    );
    // A case that expects schema-meeting settings to be refused fails, naming what loaded.
    std::fs::write(
        &suite,
        format!(
            "policies: [wasm.yaml, cel.yaml]\nwasm: {}\ncases:\n  - name: wrongly expected refusal\n    settings: {{ idleSeconds: 60 }}\n    expect: {{ settings: {{ error: settingsSchema }} }}\n",
            policy_wasm_path("idle_suspend").display()
        ),
    )
    .expect("write suite");
    let output = sandman(&["policy", "test", path_str(&suite)]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(stdout(&output).contains("loaded"), "{}", describe(&output));
}

/// `inspect` of a manifest shows what its author wrote about it (title, description, author,
/// settings schema) next to its hooks, for Wasm (with the component's report) and CEL.
#[test]
fn inspect_shows_a_manifests_metadata() {
    let dir = scratch("inspect-manifest");
    let manifest = dir.join("policy.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata:\n  name: idle\n  annotations:\n    sandman.dev/title: Idle suspend\n    sandman.dev/description: Suspends idle Sandboxes.\n    sandman.dev/author: Platform Team <platform@example.com>\nspec:\n  settingsSchema: {{ type: object, properties: {{ idleSeconds: {{ type: integer }} }} }}\n  wasm:\n    configMap: {{ namespace: sandman-system, name: idle, key: policy.wasm }}\n    sha256: \"{}\"\n    settings: {{ idleSeconds: 1800 }}\n",
            "0".repeat(64)
        ),
    )
    .expect("write manifest");
    let wasm = policy_wasm_path("idle_suspend");
    let output = sandman(&[
        "policy",
        "inspect",
        path_str(&manifest),
        "--wasm",
        path_str(&wasm),
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_yaml::from_str(&stdout(&output)).expect("YAML report");
    assert_eq!(report["title"], "Idle suspend", "{report}");
    assert_eq!(
        report["description"], "Suspends idle Sandboxes.",
        "{report}"
    );
    assert_eq!(
        report["author"], "Platform Team <platform@example.com>",
        "{report}"
    );
    assert_eq!(report["language"], "wasm", "{report}");
    assert_eq!(
        report["hooks"],
        serde_json::json!(["lifecycle"]),
        "{report}"
    );
    assert_eq!(
        report["settingsSchema"]["properties"]["idleSeconds"]["type"], "integer",
        "{report}"
    );
    assert_eq!(
        report["component"]["sha256"],
        sandman::distribution::sha256_hex(&std::fs::read(&wasm).expect("component")),
        "{report}"
    );
    // A CEL manifest: its hooks are the expressions it has, and no component is reported.
    std::fs::write(
        &manifest,
        "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata:\n  name: idle-cel\n  annotations: { sandman.dev/title: Idle in CEL }\nspec:\n  cel:\n    lifecycle: \"null\"\n",
    )
    .expect("write cel manifest");
    let output = sandman(&["policy", "inspect", path_str(&manifest)]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_yaml::from_str(&stdout(&output)).expect("YAML report");
    assert_eq!(report["title"], "Idle in CEL", "{report}");
    assert_eq!(report["language"], "cel", "{report}");
    assert_eq!(
        report["hooks"],
        serde_json::json!(["lifecycle"]),
        "{report}"
    );
    assert!(report.get("component").is_none(), "{report}");
    assert!(report.get("author").is_none(), "{report}");
}

/// `policy test --watch` runs again when the suite or a case's Sandbox file changes, and keeps
/// running when a run fails.
#[test]
fn policy_test_watch_reruns_on_change() {
    use std::io::BufRead;
    let dir = scratch("watch");
    let wasm = policy_wasm_path("untrusted_to_gvisor");
    let agent = dir.join("agent.yaml");
    let untrusted = "metadata: { labels: { sandman.dev/trust: untrusted } }\n";
    std::fs::write(&agent, untrusted).expect("write sandbox");
    let suite = dir.join("suite.yaml");
    let suite_text = |runtime: &str| {
        format!(
            "policy: {}\ncases:\n  - name: untrusted runs under gVisor\n    sandbox: {{ file: agent.yaml }}\n    expect: {{ isolation: {{ runtimeClassName: {runtime} }} }}\n",
            wasm.display()
        )
    };
    std::fs::write(&suite, suite_text("gvisor")).expect("write suite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandman"))
        .args(["policy", "test", path_str(&suite), "--watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the watch");
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // Each summary line in turn; a bound only so that a broken watch fails rather than hangs.
    let next_summary = || loop {
        let line = received
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the watch printed its summary");
        if line.contains(" passed, ") {
            return line;
        }
    };
    assert_eq!(next_summary(), "1 passed, 0 failed");
    std::fs::write(&suite, suite_text("kata")).expect("change the suite");
    assert_eq!(
        next_summary(),
        "0 passed, 1 failed",
        "the changed suite ran"
    );
    // The Sandbox file is watched too: a trusted Sandbox gets no isolation decision.
    std::fs::write(&suite, suite_text("gvisor")).expect("restore the suite");
    assert_eq!(next_summary(), "1 passed, 0 failed");
    std::fs::write(
        &agent,
        "metadata: { labels: { sandman.dev/trust: trusted } }\n",
    )
    .expect("change the sandbox");
    assert_eq!(
        next_summary(),
        "0 passed, 1 failed",
        "the changed Sandbox ran"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A suite can assert that settings are refused at load time, and says so when they are not.
#[test]
fn suite_asserts_settings_refusal() {
    let dir = scratch("settings-refusal");
    let suite = dir.join("suite.yaml");
    let wasm = policy_wasm_path("idle_suspend");
    std::fs::write(
        &suite,
        format!(
            "policy: {}\ncases:\n  - name: zero is refused\n    settings: {{ idleSeconds: 0 }}\n    expect: {{ settings: {{ error: must be positive }} }}\n  - name: a good setting is not refused\n    settings: {{ idleSeconds: 60 }}\n    expect: {{ settings: {{ error: must be positive }} }}\n",
            wasm.display()
        ),
    )
    .expect("write suite");
    let output = sandman(&["policy", "test", path_str(&suite)]);
    let out = stdout(&output);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        out.contains("PASS") && out.contains("zero is refused"),
        "{out}"
    );
    assert!(
        out.contains("FAIL")
            && out.contains("a good setting is not refused")
            && out.contains("loaded"),
        "{out}"
    );
}

/// Cases are strict (unknown keys and empty expectations are errors, not silent passes), can
/// be selected by name, name the differing field and the case's line, and report as JSON or
/// JUnit.
#[test]
fn suite_cases_are_strict_selectable_and_reported() {
    let dir = scratch("strict");
    let suite = dir.join("suite.yaml");
    let wasm = policy_wasm_path("untrusted_to_gvisor");
    std::fs::write(
        &suite,
        format!(
            "policy: {}
cases:
  - name: misspelled sandbox field
    sandbox: {{ metadata: {{ lables: {{ sandman.dev/trust: untrusted }} }} }}
    expect: {{ isolation: null }}
  - name: checks nothing
    expect: {{}}
  - name: misspelled hook
    expect: {{ isolaton: null }}
  - name: wrong runtime
    sandbox: {{ metadata: {{ labels: {{ sandman.dev/trust: untrusted }} }} }}
    expect: {{ isolation: {{ runtimeClassName: kata }} }}
",
            wasm.display()
        ),
    )
    .expect("write suite");
    let output = sandman(&["policy", "test", path_str(&suite)]);
    let out = stdout(&output);
    assert!(
        out.contains("sandbox.metadata.lables is not a field"),
        "{out}"
    );
    assert!(out.contains("expect is empty"), "{out}");
    assert!(out.contains("unknown key \"isolaton\""), "{out}");
    assert!(
        out.contains("isolation.runtimeClassName: expected \"kata\", got \"gvisor\""),
        "{out}"
    );
    assert!(
        out.contains("suite.yaml:10 "),
        "the failing case's line: {out}"
    );
    assert!(out.contains("0 passed, 4 failed"), "{out}");

    let only = sandman(&[
        "policy",
        "test",
        path_str(&suite),
        "--case",
        "wrong runtime",
        "--output",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&only.stdout).expect("JSON report");
    assert_eq!(report["failed"], 1, "{report}");
    assert_eq!(report["cases"][0]["case"], "wrong runtime");
    assert_eq!(report["cases"][0]["line"], 10);

    let junit = stdout(&sandman(&[
        "policy",
        "test",
        path_str(&suite),
        "--output",
        "junit",
    ]));
    assert!(
        junit.starts_with("<?xml") && junit.matches("<testcase").count() == 4,
        "{junit}"
    );
    assert_eq!(junit.matches("<failure").count(), 4, "{junit}");
}

/// `policy bench` reports per-hook figures, saves them as a baseline, and fails on a
/// regression past the threshold. The baselines here are made up at both extremes, so the
/// verdicts do not depend on the machine's speed.
#[test]
fn bench_reports_and_detects_regression() {
    let dir = scratch("bench");
    let wasm = policy_wasm_path("idle_suspend");
    let saved = dir.join("saved.json");
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "bench",
            "policies/tests/idle-suspend.yaml",
            "--policy",
            "policies/idle-suspend/policy.yaml",
            "--wasm",
            path_str(&wasm),
            "--iterations",
            "5",
        ];
        args.extend_from_slice(extra);
        sandman(&args)
    };
    let output = bench(&["--save", path_str(&saved)]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stdout(&output).contains("idle-suspend/lifecycle"),
        "{}",
        describe(&output)
    );
    // It says which build measured, and why it ran as many evaluations as it did.
    let build = if cfg!(debug_assertions) {
        "WARNING: a debug build of sandman measured these"
    } else {
        "build: release"
    };
    assert!(stdout(&output).contains(build), "{}", describe(&output));
    assert!(
        stdout(&output).contains("evaluations of each of the suites'"),
        "{}",
        describe(&output)
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved).expect("baseline")).expect("JSON");
    let lifecycle = &figures["idle-suspend/lifecycle"];
    assert!(
        lifecycle["p50_us"].as_f64().is_some_and(|p| p > 0.0),
        "{figures}"
    );
    assert!(
        lifecycle["p99_us"].as_f64() >= lifecycle["p50_us"].as_f64(),
        "{figures}"
    );
    assert!(
        lifecycle["peak_memory_bytes"]
            .as_u64()
            .is_some_and(|m| m > 0),
        "{figures}"
    );

    let with_baseline = |p50: f64, memory: u64| {
        let path = dir.join(format!("baseline-{p50}.json"));
        let baseline = serde_json::json!({ "idle-suspend/lifecycle": {
            "p50_us": p50, "p99_us": p50, "peak_memory_bytes": memory, "evaluations": 1,
        }});
        std::fs::write(&path, baseline.to_string()).expect("write baseline");
        bench(&["--baseline", path_str(&path), "--threshold", "25"])
    };
    let generous = with_baseline(1e12, u64::MAX / 2);
    assert!(generous.status.success(), "{}", describe(&generous));
    let impossible = with_baseline(1e-9, 1);
    assert!(!impossible.status.success(), "{}", describe(&impossible));
    let out = stdout(&impossible);
    assert!(
        out.contains("REGRESSION  idle-suspend/lifecycle: p50") && out.contains("peak memory"),
        "{out}"
    );
}

/// A CEL variable is evaluated only for the hooks that read it: one that fails on this input
/// fails the hook that reads it, and no other.
#[test]
fn cel_broken_variable_breaks_only_its_hooks() {
    let dir = scratch("cel-variables");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        r#"apiVersion: sandman.dev/v1alpha1
kind: SandboxPolicy
metadata: { name: split }
spec:
  cel:
    variables:
      - name: team
        expression: sandbox.labels['team']
      - name: idle
        expression: activity.idleSeconds
    isolation: |
      variables.team == 'red' ? {"runtimeClassName": "gvisor", "reason": "red team"} : null
    lifecycle: |
      variables.idle > 60 ? {"action": "suspend", "reason": "idle"} : null
"#,
    )
    .expect("write policy");
    let suite = dir.join("suite.yaml");
    std::fs::write(
        &suite,
        format!(
            "policy: {}\ncases:\n  - name: no team label\n    activity: {{ idleSeconds: 600 }}\n    expect:\n      isolation: {{ error: team }}\n      lifecycle: {{ action: suspend }}\n",
            policy.display()
        ),
    )
    .expect("write suite");
    let output = sandman(&["policy", "test", path_str(&suite)]);
    assert!(output.status.success(), "{}", describe(&output));
}

/// A misspelled input field, or a wrong key in any branch's result, fails the load with the
/// manifest's file, line and column; a misspelled hook key fails the manifest.
#[test]
fn cel_unknown_field_is_a_load_error_with_position() {
    let dir = scratch("cel-checked");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let sandbox = write("sandbox.yaml", "metadata: { name: agent }\n");
    let eval = |policy: &Path| {
        sandman(&[
            "policy",
            "eval",
            "--policy",
            path_str(policy),
            "--sandbox",
            path_str(&sandbox),
        ])
    };
    // Each is refused at load, pointing at `file:line:column` in the manifest.
    let refused_at = |name: &str, text: &str, place: &str, words: &str| {
        let output = eval(&write(name, text));
        assert!(!output.status.success(), "{}", describe(&output));
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(err.contains(place) && err.contains(words), "{err}");
    };
    refused_at(
        "field.yaml",
        "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: { name: p }\nspec:\n  cel:\n    lifecycle: |\n      activity.openConnections > 0 ? null :\n        activity.idleSecs > 60 ? {\"action\": \"suspend\", \"reason\": \"idle\"} : null\n",
        "field.yaml:8:17",
        "activity.idleSecs is not a field",
    );
    // The wrong key is on the branch no sample input reaches: still found.
    refused_at(
        "key.yaml",
        "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: { name: p }\nspec:\n  cel:\n    lifecycle: |\n      activity.idleSeconds > 999999\n        ? {\"actoin\": \"suspend\"}\n        : null\n",
        "key.yaml:8:12",
        "\"actoin\"",
    );
    // A name nothing defines, in a variable and in a hook.
    refused_at(
        "undefined.yaml",
        "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: { name: p }\nspec:\n  cel:\n    variables:\n      - name: idle\n        expression: activty.idleSeconds\n    lifecycle: \"variables.idle > 60 ? null : null\"\n",
        "undefined.yaml:8:21",
        "unknown name \"activty\"",
    );
    refused_at(
        "undefined-hook.yaml",
        "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: { name: p }\nspec:\n  cel:\n    lifecycle: |\n      activity.idleSeconds > 60\n        ? {\"action\": \"suspend\", \"reason\": why}\n        : null\n",
        "undefined-hook.yaml:8:43",
        "unknown name \"why\"",
    );

    let misspelled_hook = write(
        "hook.yaml",
        "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: { name: p }\nspec:\n  cel:\n    lifecyle: \"null\"\n",
    );
    let err = String::from_utf8_lossy(&eval(&misspelled_hook).stderr).into_owned();
    assert!(err.contains("unknown field(s) spec.cel.lifecyle"), "{err}");
}

/// `policy push --sign` and `policy sign` leave cosign-format signatures beside the artifact
/// that verify under the public key, and under no other.
#[test]
fn pushed_and_signed_policies_verify_under_their_key() {
    let dir = scratch("sign");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let private = dir.join("key.pem");
    std::fs::write(&private, key.serialize_pem()).expect("write key");
    let wasm = policy_wasm_path("idle_suspend");
    let reference = format!("{}/cli/signed:v1", registry().address());
    let output = sandman(&[
        "policy",
        "push",
        path_str(&wasm),
        &reference,
        "--sign",
        path_str(&private),
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stdout(&output).contains("signed "), "{}", describe(&output));

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let http = sandman::http_client::HttpClient::new().expect("client");
    let parsed = sandman::distribution::oci::Reference::parse(&reference).expect("reference");
    runtime
        .block_on(sandman::distribution::signature::verify(
            &http,
            &parsed,
            &key.public_key_pem(),
            None,
        ))
        .expect("the pushed artifact verifies");
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    assert!(
        runtime
            .block_on(sandman::distribution::signature::verify(
                &http,
                &parsed,
                &other.public_key_pem(),
                None
            ))
            .is_err(),
        "another key does not verify it"
    );

    // `policy sign` of an artifact pushed unsigned.
    let unsigned = format!("{}/cli/later:v1", registry().address());
    assert!(
        sandman(&["policy", "push", path_str(&wasm), &unsigned])
            .status
            .success()
    );
    let later = sandman::distribution::oci::Reference::parse(&unsigned).expect("reference");
    assert!(
        runtime
            .block_on(sandman::distribution::signature::verify(
                &http,
                &later,
                &key.public_key_pem(),
                None
            ))
            .is_err()
    );
    let output = sandman(&["policy", "sign", "--key", path_str(&private), &unsigned]);
    assert!(output.status.success(), "{}", describe(&output));
    runtime
        .block_on(sandman::distribution::signature::verify(
            &http,
            &later,
            &key.public_key_pem(),
            None,
        ))
        .expect("signed afterwards");
}

/// A P-256 key pair in `dir`: the private key (PKCS#8 PEM) and the public key (PKIX PEM).
fn key_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(&private, key.serialize_pem()).expect("write key");
    std::fs::write(&public, key.public_key_pem()).expect("write key");
    (private, public)
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn policy_verify_refuses_a_tampered_signature() {
    let dir = scratch("verify");
    let (private, public) = key_pair(&dir, "signer");
    let (_, stranger) = key_pair(&dir, "stranger");
    let signed_wasm = policy_wasm_path("idle_suspend");
    let other_wasm = policy_wasm_path("untrusted_to_gvisor");
    let address = registry().address();
    let signed = format!("{address}/cli/verify:v1");
    let unsigned = format!("{address}/cli/verify:v2");
    let push = sandman(&[
        "policy",
        "push",
        path_str(&signed_wasm),
        &signed,
        "--sign",
        path_str(&private),
    ]);
    assert!(push.status.success(), "{}", describe(&push));
    let push = sandman(&["policy", "push", path_str(&other_wasm), &unsigned]);
    assert!(push.status.success(), "{}", describe(&push));
    let verify = |reference: &str, key: &Path| {
        sandman(&["policy", "verify", "--key", path_str(key), reference])
    };

    let good = verify(&signed, &public);
    assert!(good.status.success(), "{}", describe(&good));
    assert!(stdout(&good).contains("verified "), "{}", describe(&good));
    let wrong_key = verify(&signed, &stranger);
    assert!(!wrong_key.status.success(), "{}", describe(&wrong_key));
    assert!(
        stderr(&wrong_key).contains("verifies with the key"),
        "{}",
        describe(&wrong_key)
    );
    let none = verify(&unsigned, &public);
    assert!(!none.status.success(), "{}", describe(&none));
    assert!(
        stderr(&none).contains("no signature"),
        "{}",
        describe(&none)
    );

    // Tampered: the good signature of v1, copied beside v2. It verifies under the key, but it
    // names v1's manifest, so it is not v2's.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let http = sandman::http_client::HttpClient::new().expect("client");
    let digest_of = |reference: &str| {
        let parsed = sandman::distribution::oci::Reference::parse(reference).expect("reference");
        runtime
            .block_on(sandman::distribution::signature::manifest_digest(
                &http, &parsed, None,
            ))
            .expect("digest")
    };
    let manifests = format!("http://{address}/v2/cli/verify/manifests");
    let media = "application/vnd.oci.image.manifest.v1+json";
    let from = sandman::distribution::signature::signature_tag(&digest_of(&signed));
    let to = sandman::distribution::signature::signature_tag(&digest_of(&unsigned));
    let signature = runtime
        .block_on(http.send(
            http::Method::GET,
            &format!("{manifests}/{from}"),
            &[(http::header::ACCEPT, media)],
            bytes::Bytes::new(),
        ))
        .expect("read the signature");
    assert!(signature.status.is_success(), "{:?}", signature.status);
    let copied = runtime
        .block_on(http.send(
            http::Method::PUT,
            &format!("{manifests}/{to}"),
            &[(http::header::CONTENT_TYPE, media)],
            signature.body.clone(),
        ))
        .expect("copy the signature");
    assert!(copied.status.is_success(), "{:?}", copied.status);
    let tampered = verify(&unsigned, &public);
    assert!(!tampered.status.success(), "{}", describe(&tampered));
    assert!(
        stderr(&tampered).contains("verifies with the key (1 tried)"),
        "{}",
        describe(&tampered)
    );

    // pull writes the component only once its signature verifies.
    let out = dir.join("pulled.wasm");
    let pulled = sandman(&[
        "policy",
        "pull",
        &signed,
        "--key",
        path_str(&public),
        "-o",
        path_str(&out),
    ]);
    assert!(pulled.status.success(), "{}", describe(&pulled));
    assert_eq!(
        std::fs::read(&out).expect("pulled"),
        std::fs::read(&signed_wasm).expect("wasm")
    );
    let refused_out = dir.join("refused.wasm");
    let refused = sandman(&[
        "policy",
        "pull",
        &unsigned,
        "--key",
        path_str(&public),
        "-o",
        path_str(&refused_out),
    ]);
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(
        !refused_out.exists(),
        "nothing is written for a signature that does not verify"
    );
}

#[test]
fn policy_test_checks_verify_or_says_it_did_not() {
    let dir = scratch("test-verify");
    let (private, public) = key_pair(&dir, "signer");
    let (_, stranger) = key_pair(&dir, "stranger");
    let wasm = policy_wasm_path("idle_suspend");
    let digest = sandman::distribution::sha256_hex(&std::fs::read(&wasm).expect("wasm"));
    let image = format!("{}/cli/test-verify:v1", registry().address());
    let push = sandman(&[
        "policy",
        "push",
        path_str(&wasm),
        &image,
        "--sign",
        path_str(&private),
    ]);
    assert!(push.status.success(), "{}", describe(&push));
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "apiVersion: sandman.dev/v1alpha1\nkind: SandboxPolicy\nmetadata: {{ name: signed }}\nspec:\n  wasm:\n    image: {image}\n    sha256: \"{digest}\"\n    verify:\n      configMap: {{ namespace: sandman-system, name: keys, key: cosign.pub }}\n    settings: {{ idleSeconds: 1800 }}\n"
        ),
    )
    .expect("write manifest");
    let suite = dir.join("suite.yaml");
    std::fs::write(
        &suite,
        "policy: policy.yaml\ncases:\n  - name: idle is suspended\n    activity: { idleSeconds: 3600 }\n    expect: { lifecycle: { action: suspend } }\n",
    )
    .expect("write suite");
    let test = |key: Option<&Path>| {
        let mut args = vec!["policy", "test", path_str(&suite)];
        if let Some(key) = key {
            args.extend(["--key", path_str(key)]);
        }
        sandman(&args)
    };
    let unchecked = test(None);
    assert!(
        !unchecked.status.success(),
        "a required signature is never skipped: {}",
        describe(&unchecked)
    );
    assert!(
        stderr(&unchecked).contains("pass --key"),
        "{}",
        describe(&unchecked)
    );
    let checked = test(Some(&public));
    assert!(checked.status.success(), "{}", describe(&checked));
    assert!(
        stdout(&checked).contains("1 passed, 0 failed"),
        "{}",
        describe(&checked)
    );
    let wrong = test(Some(&stranger));
    assert!(!wrong.status.success(), "{}", describe(&wrong));
    assert!(
        stderr(&wrong).contains("verifies with the key"),
        "{}",
        describe(&wrong)
    );
}
