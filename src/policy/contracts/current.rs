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

impl Exports for Current {
    fn version(&self) -> &'static str {
        VERSION.name
    }

    fn has(&self, hook: Hook) -> bool {
        match hook {
            Hook::Isolation => self.isolation.is_some(),
            Hook::Resources => self.resources.is_some(),
            Hook::Lifecycle => self.lifecycle.is_some(),
            Hook::Pool => self.pool.is_some(),
        }
    }

    fn has_settings(&self) -> bool {
        self.settings.is_some()
    }

    fn validate_settings(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        settings: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        validate_settings!(self, store, instance, settings)
    }

    fn isolation(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        input: &types::Input,
    ) -> Call<types::IsolationDecision> {
        call_hook!(self.isolation, store, instance, *input, Ok)
    }

    fn resources(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        input: &types::Input,
    ) -> Call<types::ResourcesDecision> {
        call_hook!(self.resources, store, instance, *input, Ok)
    }

    fn lifecycle(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        input: &types::Input,
    ) -> Call<types::LifecycleDecision> {
        call_hook!(self.lifecycle, store, instance, *input, Ok)
    }

    fn pool(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        input: &types::PoolInput,
    ) -> Call<types::PoolDecision> {
        call_hook!(self.pool, store, instance, *input, Ok)
    }
}
