//! Clients nobody here wrote, pinned and installed once into the build directory, for tests
//! that drive sandman with them: the E2B SDKs (`e2b` from PyPI and npm) and the MCP Python SDK
//! (`mcp` from PyPI).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The E2B Python SDK release the tests pin (ANCHORS.md §6 read its source).
pub const E2B_VERSION: &str = "2.63.0";
/// The MCP Python SDK release the tests pin.
pub const MCP_VERSION: &str = "2.3.0";

/// A venv's Python with `package==version` installed, made once per release in the build
/// directory.
fn venv(package: &str, version: &str) -> PathBuf {
    let target = crate::harness::target_dir();
    let venv = target.join("polyglot").join(format!("{package}-{version}"));
    let marker = venv.join(".installed");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(version) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv (the SDK tests need Python 3 with venv)");
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", &format!("{package}=={version}")])
            .status()
            .expect("pip");
        assert!(
            installed.success(),
            "pip install {package}=={version} failed"
        );
        std::fs::write(&marker, version).expect("the venv's marker");
    }
    venv.join("bin/python")
}

/// The Python with the E2B SDK installed.
pub fn e2b_python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv("e2b", E2B_VERSION))
}

/// The Python with the MCP SDK installed.
pub fn mcp_python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv("mcp", MCP_VERSION))
}

/// The JavaScript SDK release the tests pin; `tests/e2b/js/package-lock.json` pins the rest.
pub const E2B_JS_VERSION: &str = "2.51.0";

/// A directory with the JavaScript SDK installed from `project`'s `package.json` and lock file
/// (`npm ci`), where a test copies its script so that `import 'e2b'` finds the SDK. Installed
/// again when the lock file changes.
pub fn e2b_js_project(project: &std::path::Path) -> &'static PathBuf {
    static PROJECT: OnceLock<PathBuf> = OnceLock::new();
    PROJECT.get_or_init(|| {
        let lock = std::fs::read(project.join("package-lock.json"))
            .expect("the JavaScript SDK's package-lock.json");
        let dir = crate::harness::target_dir()
            .join("polyglot")
            .join(format!("e2b-js-{E2B_JS_VERSION}"));
        let marker = dir.join(".installed");
        if std::fs::read(&marker).ok().as_deref() != Some(lock.as_slice()) {
            std::fs::create_dir_all(&dir).expect("the SDK's directory");
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(project.join(file), dir.join(file)).expect("the SDK's project");
            }
            let installed = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm (the E2B JavaScript SDK tests need Node and npm)");
            assert!(installed.success(), "npm ci in {} failed", dir.display());
            std::fs::write(&marker, &lock).expect("the project's marker");
        }
        dir
    })
}
