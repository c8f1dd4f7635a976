//! The Sandbox controller: one reconcile in three stages (`reconcile`: `gather`, the phase
//! machine `phase`, then `apply`), the status it composes, the children it makes, and the
//! automatic suspend, resume and checkpoint steps.

pub mod apply;
pub mod automation;
pub mod baseline;
pub mod checkpoint_slots;
pub mod checkpointing;
pub mod children;
pub mod context;
pub mod decisions;
pub mod events;
pub mod gather;
pub mod hardening;
pub mod ownership;
pub mod phase;
pub mod reconcile;
pub mod refused;
pub mod runtime;
pub mod status;
pub mod supervisor;
pub mod token;
