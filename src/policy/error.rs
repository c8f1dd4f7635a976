use std::time::Duration;

/// Why a policy could not be loaded or did not decide.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the module is not a valid component for this host: {0}")]
    Compile(String),
    #[error("the component cannot be linked: {0}")]
    Link(String),
    #[error("the component exports none of the hooks isolation, resources or lifecycle")]
    NoHooks,
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    #[error("the policy did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the policy exceeded its memory limit of {0} bytes")]
    OutOfMemory(usize),
    #[error("the policy trapped: {0}")]
    Trap(String),
    #[error("the policy returned an error: {0}")]
    Guest(String),
    #[error("the policy's output is {size} bytes, more than the {limit} allowed")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("the policy's decision is refused: {0}")]
    InvalidDecision(String),
    #[error("the policy does not implement the {0} hook")]
    MissingHook(&'static str),
    #[error("policy engine: {0}")]
    Engine(String),
    #[error("the policy has not loaded: {0}")]
    Unavailable(String),
}

impl PolicyError {
    /// A short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PolicyError::Compile(_) => "compile",
            PolicyError::Link(_) => "link",
            PolicyError::NoHooks => "no_hooks",
            PolicyError::InvalidSettings(_) => "invalid_settings",
            PolicyError::Timeout(_) => "timeout",
            PolicyError::OutOfMemory(_) => "out_of_memory",
            PolicyError::Trap(_) => "trap",
            PolicyError::Guest(_) => "error",
            PolicyError::OutputTooLarge { .. } => "output_too_large",
            PolicyError::InvalidDecision(_) => "invalid_decision",
            PolicyError::MissingHook(_) => "missing_hook",
            PolicyError::Engine(_) => "engine",
            PolicyError::Unavailable(_) => "unavailable",
        }
    }
}
