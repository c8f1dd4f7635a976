//! The hooks a policy may decide, and who hears of each evaluation of one.

use std::time::Duration;

use super::error::PolicyError;

/// The decisions a policy may make: three for a Sandbox, and the size of a warm pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Isolation,
    Resources,
    Lifecycle,
    Pool,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::Isolation,
        Hook::Resources,
        Hook::Lifecycle,
        Hook::Pool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Isolation => "isolation",
            Hook::Resources => "resources",
            Hook::Lifecycle => "lifecycle",
            Hook::Pool => "pool",
        }
    }

    pub fn parse(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|hook| hook.name() == name)
    }
}

/// How one evaluation ended.
#[derive(Debug, Clone, Copy)]
pub enum Evaluated<'a> {
    Decided,
    Abstained,
    Failed(&'a PolicyError),
}

impl Evaluated<'_> {
    /// Its name in metrics and traces: `decided`, `abstained`, or the failure's (`timeout`,
    /// `trap`, `out_of_memory`, …).
    pub fn label(self) -> &'static str {
        match self {
            Self::Decided => "decided",
            Self::Abstained => "abstained",
            Self::Failed(error) => error.metric_label(),
        }
    }
}

/// Hears of each evaluation: which policy and hook, how it ended, and how long it took. The
/// engine knows nothing of where this goes, so two operators in one process each count their
/// own.
pub trait EvaluationObserver: Send + Sync {
    fn evaluated(&self, policy: &str, hook: Hook, outcome: Evaluated<'_>, took: Duration);
}

/// The observer of an engine nobody watches.
pub struct Unobserved;

impl EvaluationObserver for Unobserved {
    fn evaluated(&self, _: &str, _: Hook, _: Evaluated<'_>, _: Duration) {}
}
