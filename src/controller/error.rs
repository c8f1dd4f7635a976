/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {kind} {name}: {source}")]
    Child {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("write status: {0}")]
    Status(#[source] kube::Error),
    /// The policy engine could not start (no address space, no epoch thread).
    #[error("start the policy engine: {0}")]
    Engine(#[source] crate::policy::PolicyError),
    /// The blocking task that evaluates policies panicked or was cancelled.
    #[error("policy evaluation task failed: {0}")]
    Evaluation(#[source] tokio::task::JoinError),
    #[error("the SandboxPolicy controller stopped before loading policies")]
    PolicyControllerStopped,
    /// No HTTP client for pods' supervisors (checkpoints).
    #[error("HTTP client: {0}")]
    HttpClient(#[source] crate::http_client::FetchError),
    #[error("leader election: {0}")]
    Leadership(#[from] super::leader::LeaderError),
    /// The operating system gave no randomness for a Sandbox's token, or its Secret holds no
    /// token the status recorded.
    #[error("the Sandbox's token: {0}")]
    Token(String),
    /// A cached Sandbox, pod or Service did not parse as sandman's types (see `lean`): a
    /// spec or status in a schema sandman's types do not follow.
    #[error("read the cached object: {0}")]
    Cached(#[source] serde_json::Error),
}

impl Error {
    pub(crate) fn child(
        action: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_string();
        move |source| Error::Child {
            action,
            kind,
            name,
            source,
        }
    }
}
