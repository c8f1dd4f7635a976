use std::path::PathBuf;

/// Everything that can stop the local control plane from starting or stopping.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the control-plane binaries with Go: {0}")]
    Build(String),
    #[error("binary {0} not found (set KUBEBUILDER_ASSETS or install Go to build it)")]
    MissingBinary(PathBuf),
    #[error("certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{component} did not become ready within {seconds}s; see {log}")]
    NotReady {
        component: String,
        seconds: u64,
        log: PathBuf,
    },
    #[error("{component} exited early ({status}); see {log}")]
    Exited {
        component: String,
        status: String,
        log: PathBuf,
    },
    #[error("a control plane is already running (state in {0})")]
    AlreadyRunning(PathBuf),
    #[error("no control plane is running (no state in {0})")]
    NotRunning(PathBuf),
    #[error("kubernetes: {0}")]
    Kube(String),
    #[error("state file: {0}")]
    State(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
