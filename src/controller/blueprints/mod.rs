//! The controllers of templates, warm pools and claims: each writes Sandboxes that the Sandbox
//! controller then runs like any other.

mod claim_context;
mod claim_status;
pub mod claims;
pub mod pool_sizing;
pub mod pools;
pub mod templates;
mod warm_take;
