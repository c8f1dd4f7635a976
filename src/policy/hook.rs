//! The hooks a policy may decide, and who hears of each evaluation of one.

use std::time::Duration;

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

/// Hears of each evaluation: which policy and hook, how it ended (`decided`, `abstained`,
/// `timeout`, …), and how long it took. The engine knows nothing of where this goes, so two
/// operators in one process each count their own.
pub trait EvaluationObserver: Send + Sync {
    fn evaluated(&self, policy: &str, hook: Hook, outcome: &str, took: Duration);
}

/// The observer of an engine nobody watches.
pub struct Unobserved;

impl EvaluationObserver for Unobserved {
    fn evaluated(&self, _: &str, _: Hook, _: &str, _: Duration) {}
}
