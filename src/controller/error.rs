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
    #[error("{0}")]
    Policy(String),
    #[error("leader election: {0}")]
    Leadership(#[from] super::leader::LeaderError),
    #[error("serialize {0}: {1}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Error {
    /// A short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Child { .. } => "child",
            Error::Status(_) => "status",
            Error::Serialize(..) => "serialize",
            Error::Policy(_) => "policy",
            Error::Leadership(_) => "leadership",
        }
    }

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
