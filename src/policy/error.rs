use std::time::Duration;

/// Why a policy could not be loaded or did not decide. Errors from wasmtime are kept whole
/// (their chain of causes is shown with `{:#}`), not flattened to text.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the module is not a valid component for this host: {0:#}")]
    Compile(#[source] wasmtime::Error),
    #[error("the module is not a valid component: {0}")]
    Inspect(String),
    #[error("the component cannot be linked: {0:#}")]
    Link(#[source] wasmtime::Error),
    #[error(
        "the component implements sandman:policy@{found}, but this host speaks sandman:policy@{}; rebuild it against wit/ of this release",
        .supported.join(" and @")
    )]
    OtherContractVersion {
        found: String,
        supported: Vec<&'static str>,
    },
    #[error("the component does not export sandman:policy/settings: {0:#}")]
    NoSettings(#[source] wasmtime::Error),
    #[error("the component exports none of the hooks isolation, resources or lifecycle")]
    NoHooks,
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    #[error("the policy did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the policy exceeded its memory limit of {0} bytes")]
    OutOfMemory(usize),
    #[error("the policy trapped: {0}")]
    Trap(#[source] wasmtime::Trap),
    #[error("the policy failed: {0:#}")]
    Failed(#[source] wasmtime::Error),
    #[error("the policy returned an error: {0}")]
    Guest(String),
    #[error("the policy's output is {size} bytes, more than the {limit} allowed")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("the policy's decision is refused: {0}")]
    InvalidDecision(String),
    #[error("the policy does not implement the {0} hook")]
    MissingHook(&'static str),
    #[error("policy engine: {0:#}")]
    Engine(#[source] wasmtime::Error),
    #[error("start the policy epoch ticker: {0}")]
    Ticker(#[source] std::io::Error),
    #[error("the cache of compiled policies: {0}")]
    Cache(#[source] super::precompiled::CacheError),
    #[error("the policy has not loaded: {0}")]
    Unavailable(String),
}

impl PolicyError {
    /// A short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PolicyError::Compile(_) | PolicyError::Inspect(_) => "compile",
            PolicyError::Link(_) | PolicyError::OtherContractVersion { .. } => "link",
            PolicyError::NoSettings(_) => "link",
            PolicyError::NoHooks => "no_hooks",
            PolicyError::InvalidSettings(_) => "invalid_settings",
            PolicyError::Timeout(_) => "timeout",
            PolicyError::OutOfMemory(_) => "out_of_memory",
            PolicyError::Trap(_) | PolicyError::Failed(_) => "trap",
            PolicyError::Guest(_) => "error",
            PolicyError::OutputTooLarge { .. } => "output_too_large",
            PolicyError::InvalidDecision(_) => "invalid_decision",
            PolicyError::MissingHook(_) => "missing_hook",
            PolicyError::Engine(_) | PolicyError::Ticker(_) | PolicyError::Cache(_) => "engine",
            PolicyError::Unavailable(_) => "unavailable",
        }
    }
}
