//! Policies: the WIT contract (`wit/`), and a wasmtime host that runs policy components with no
//! ambient authority, bounded CPU time and bounded memory.

mod bindings;
pub mod bounds;
pub mod cel;
mod contract_v0_1;
mod contract_v0_2;
mod engine;
mod error;
pub mod input;
mod inspect;
pub mod limits;
pub mod loader;
mod precompiled;
pub mod set;
pub mod wire;

pub use bindings::sandman::policy::types;
pub use engine::{
    CONTRACT_VERSION, EvaluationObserver, Hook, HookMask, Limits, LoadedPolicy, PolicyEngine, Reuse,
};
pub use error::PolicyError;
pub use inspect::Inspection;
pub use precompiled::Compiled;
pub use set::{
    ActivePolicy, FirstDecision, IsolationOutcome, LifecycleOutcome, MergedResources, PolicyFailed,
    PolicySet, PoolOutcome,
};
