//! The E2B Python SDK (`e2b` from PyPI, pinned), installed once into a venv in the build
//! directory, for tests that drive sandman with a client nobody here wrote.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The SDK release the tests pin (ANCHORS.md §6 read its source).
pub const E2B_VERSION: &str = "2.63.0";

/// The venv's Python, with `e2b` installed.
pub fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let target = crate::harness::target_dir();
        let venv = target.join("polyglot").join(format!("e2b-{E2B_VERSION}"));
        let marker = venv.join(".installed");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(E2B_VERSION) {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 -m venv (the E2B SDK tests need Python 3 with venv)");
            assert!(made.success(), "python3 -m venv {} failed", venv.display());
            let installed = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", &format!("e2b=={E2B_VERSION}")])
                .status()
                .expect("pip");
            assert!(installed.success(), "pip install e2b=={E2B_VERSION} failed");
            std::fs::write(&marker, E2B_VERSION).expect("the venv's marker");
        }
        venv.join("bin/python")
    })
}
