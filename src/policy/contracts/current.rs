//! The current contract (`wit/`): calls go through unchanged.

use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

use super::{Call, Exports, Version};
use crate::policy::bindings::Policy;
use crate::policy::bindings::exports::sandman::policy::{
    isolation, lifecycle, pool, resources, settings,
};
use crate::policy::store::GuestState;
use crate::policy::{Hook, types};

adapter!(
    Current,
    "0.3.0",
    world: Policy,
    hooks: [isolation, resources, lifecycle, pool],
    down: same,
    up: answer,
    pool: yes
);

/// The current contract's input, as it is.
fn same<T>(input: &T) -> wasmtime::Result<&T> {
    Ok(input)
}

/// The current contract's answer, as it is.
fn answer<D>(answer: Result<Option<D>, String>) -> Call<D> {
    Ok(answer)
}
