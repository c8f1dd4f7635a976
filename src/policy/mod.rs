//! Policies: the WIT contract (`wit/`), and a wasmtime host that runs policy components with no
//! ambient authority, bounded CPU time and bounded memory.

mod bindings;
pub mod bounds;
pub mod cel;
mod contracts;
mod engine;
mod error;
mod hook;
pub mod input;
mod inspect;
pub mod limits;
mod loaded;
pub mod loader;
mod precompiled;
pub mod set;
pub mod settings_schema;
mod store;
pub mod wire;

pub use bindings::sandman::policy::types;
pub use contracts::CONTRACT_VERSION;
pub use engine::PolicyEngine;
pub use error::PolicyError;
pub use hook::{Evaluated, EvaluationObserver, Hook};
pub use inspect::Inspection;
pub use limits::Limits;
pub use loaded::{EVALUATION_TARGET, HookMask, LoadedPolicy, Reuse};
pub use precompiled::Compiled;
pub use set::{
    ActivePolicy, FirstDecision, IsolationOutcome, LifecycleOutcome, MergedResources, PolicyFailed,
    PolicySet, PoolOutcome,
};
