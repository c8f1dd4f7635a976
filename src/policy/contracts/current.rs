//! The current contract (`wit/`): calls go through unchanged.

use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

use super::{Call, Exports, Version};
use crate::policy::bindings::Policy;
use crate::policy::bindings::exports::sandman::policy::{
    isolation, lifecycle, pool, resources, settings,
};
use crate::policy::store::GuestState;
use crate::policy::{Hook, types};

pub const VERSION: Version = Version {
    name: "0.3.0",
    link: |linker: &mut Linker<GuestState>| {
        Policy::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
    },
    exports: |pre| {
        let exports = Current::of(pre);
        exports.any().then(|| Box::new(exports) as Box<dyn Exports>)
    },
};

#[derive(Default)]
pub struct Current {
    settings: Option<settings::GuestIndices>,
    isolation: Option<isolation::GuestIndices>,
    resources: Option<resources::GuestIndices>,
    lifecycle: Option<lifecycle::GuestIndices>,
    pool: Option<pool::GuestIndices>,
}

impl Current {
    fn of(pre: &InstancePre<GuestState>) -> Self {
        Self {
            settings: settings::GuestIndices::new(pre).ok(),
            isolation: isolation::GuestIndices::new(pre).ok(),
            resources: resources::GuestIndices::new(pre).ok(),
            lifecycle: lifecycle::GuestIndices::new(pre).ok(),
            pool: pool::GuestIndices::new(pre).ok(),
        }
    }

    fn any(&self) -> bool {
        Hook::ALL.into_iter().any(|hook| self.has(hook))
    }
}

exports_impl!(Current, down: same, up: answer, pool: yes);

/// The current contract's input, as it is.
fn same<T>(input: &T) -> wasmtime::Result<&T> {
    Ok(input)
}

/// The current contract's answer, as it is.
fn answer<D>(answer: Result<Option<D>, String>) -> Call<D> {
    Ok(answer)
}
