//! `sandman policy new`: a project in each language builds with its one command, outside this
//! repository, and passes its own example suite at once; it exports only the hooks it asked
//! for. The builds use the registries (crates.io, PyPI, npm) as a new author would.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::*;

const HOOKS: &str = "isolation,lifecycle";

/// Writes a project for `lang`, checks it carries everything it needs, builds it with `build`
/// and runs its suite.
fn scaffold_build_and_test(lang: &str, build: &[&[&str]]) {
    let scratch = scratch(&format!("scaffold-{lang}"));
    let project = scratch.join(format!("demo-{lang}"));
    let _ = std::fs::remove_dir_all(&project);
    let output = sandman_in(
        &scratch,
        &[
            "policy",
            "new",
            &format!("demo-{lang}"),
            "--lang",
            lang,
            "--hooks",
            HOOKS,
        ],
    );
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stdout(&output).contains("next:"), "{}", describe(&output));
    for file in [
        "policy.yaml",
        "tests/suite.yaml",
        "README.md",
        "wit/policy.wit",
    ] {
        assert!(project.join(file).exists(), "{lang}: {file}");
    }
    // Nothing points back into a sandman checkout.
    assert_self_contained(&project);

    for step in build {
        let (program, args) = step.split_first().expect("a command");
        let output = Command::new(program)
            .args(args)
            .current_dir(&project)
            // As a new author runs it: none of this build's cargo settings.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{lang}: {step:?} failed\n{}",
            describe(&output)
        );
    }

    let output = sandman_in(&project, &["policy", "test", "tests/suite.yaml"]);
    assert!(output.status.success(), "{lang}: {}", describe(&output));
    let report = stdout(&output);
    assert!(report.contains("0 failed"), "{lang}: {report}");
    // isolation (3 cases), lifecycle (3), and the refusals of the policy's own check and of
    // the settings schema.
    assert!(report.contains("8 passed"), "{lang}: {report}");

    let component = if lang == "rust" {
        project.join("target/wasm32-wasip2/release/demo_rust.wasm")
    } else {
        project.join("policy.wasm")
    };
    let output = sandman_in(&project, &["policy", "inspect", path_str(&component)]);
    assert!(output.status.success(), "{}", describe(&output));
    let inspection: serde_json::Value =
        serde_yaml::from_str(&stdout(&output)).expect("inspect YAML");
    assert_eq!(
        inspection["hooks"],
        serde_json::json!(["isolation", "lifecycle"]),
        "{lang}: only the hooks asked for are exported"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

fn assert_self_contained(project: &Path) {
    for entry in walk(project) {
        let Ok(text) = std::fs::read_to_string(&entry) else {
            continue;
        };
        assert!(
            !text.contains("../../"),
            "{} reaches outside the project",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn scaffolded_rust_policy_builds_and_passes() {
    scaffold_build_and_test("rust", &[&["cargo", "build", "--release", "--quiet"]]);
}

#[test]
fn scaffolded_python_policy_builds_and_passes() {
    scaffold_build_and_test("python", &[&["bash", "build.sh"]]);
}

#[test]
fn scaffolded_js_policy_builds_and_passes() {
    scaffold_build_and_test(
        "js",
        &[
            &["npm", "install", "--no-audit", "--no-fund", "--quiet"],
            &["npm", "run", "build", "--silent"],
        ],
    );
}

/// Where this test binary keeps what the Python and JavaScript builds download (a venv with
/// componentize-py), outside the repository like cargo's target directory.
fn polyglot_cache() -> std::path::PathBuf {
    sandman_testenv::harness::target_dir().join("polyglot")
}

#[test]
fn python_and_js_examples_pass_the_shared_suites() {
    let root = sandman_testenv::harness::repo_root();
    let out = polyglot_cache().join("wasm");
    let python = Command::new("bash")
        .arg(root.join("policies/python/build.sh"))
        .arg(&out)
        .env("VENV", polyglot_cache().join("venv"))
        .output()
        .expect("run policies/python/build.sh");
    assert!(python.status.success(), "{}", describe(&python));
    let js = root.join("policies/js");
    for step in [
        &["npm", "install", "--no-audit", "--no-fund", "--quiet"][..],
        &["node", "build.mjs", path_str(&out)][..],
    ] {
        let output = Command::new(step[0])
            .args(&step[1..])
            .current_dir(&js)
            .output()
            .unwrap_or_else(|e| panic!("run {step:?}: {e}"));
        assert!(output.status.success(), "{step:?}: {}", describe(&output));
    }
    // Each against the suite its Rust and CEL twins pass, installed with its own manifest
    // (the limits an interpreter needs).
    for (suite, manifest, component) in [
        (
            "policies/tests/untrusted-to-gvisor.yaml",
            "policies/python/untrusted-to-gvisor/policy.yaml",
            "untrusted_to_gvisor.wasm",
        ),
        (
            "policies/tests/idle-suspend.yaml",
            "policies/js/idle-suspend/policy.yaml",
            "idle_suspend.wasm",
        ),
    ] {
        let output = sandman(&[
            "policy",
            "test",
            suite,
            "--policy",
            manifest,
            "--wasm",
            path_str(&out.join(component)),
        ]);
        assert!(output.status.success(), "{suite}: {}", describe(&output));
        assert!(
            stdout(&output).contains(" 0 failed"),
            "{}",
            describe(&output)
        );
    }
}

/// A CEL project is its manifest: nothing to build, the same decisions and settings check as
/// the other languages', and the same suite passes against it.
#[test]
fn cel_scaffold_builds_and_passes() {
    let scratch = scratch("scaffold-cel");
    let project = scratch.join("demo-cel");
    let _ = std::fs::remove_dir_all(&project);
    let output = sandman_in(
        &scratch,
        &[
            "policy",
            "new",
            "demo-cel",
            "--lang",
            "cel",
            "--hooks",
            "isolation,resources,lifecycle",
        ],
    );
    assert!(output.status.success(), "{}", describe(&output));
    for file in ["policy.yaml", "tests/suite.yaml", "README.md"] {
        assert!(project.join(file).exists(), "cel: {file}");
    }
    assert!(
        !project.join("wit").exists(),
        "a CEL project needs no contract"
    );
    assert_self_contained(&project);
    let output = sandman_in(&project, &["policy", "test", "tests/suite.yaml"]);
    assert!(output.status.success(), "{}", describe(&output));
    let report = stdout(&output);
    // isolation (3 cases), resources (1), lifecycle (3), and the refusals of the policy's own
    // check and of the settings schema.
    assert!(report.contains("9 passed, 0 failed"), "{report}");
    let _ = std::fs::remove_dir_all(&scratch);
}
