//! Components built against `sandman:policy@0.2.0` (frozen in `wit/versions/0.2.0`) keep
//! working. 0.3.0 only added the lifecycle decision's `checkpoint`, so every type has the same
//! fields by the same names in both versions but that one: the host translates through serde,
//! and a 0.2.0 decision reads as a current one with `checkpoint: none`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

use super::{Call, Exports, Version};
use crate::policy::bindings::sandman::policy::{host as current_host, types as current_types};
use crate::policy::store::GuestState;
use crate::policy::{Hook, types};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/versions/0.2.0",
        world: "policy",
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

use bindings::exports::sandman::policy::{isolation, lifecycle, pool, resources, settings};

adapter!(
    V0_2,
    "0.2.0",
    world: bindings::Policy,
    hooks: [isolation, resources, lifecycle, pool],
    down: translate,
    up: decision,
    pool: yes
);

/// The same value in the other version's types.
pub fn translate<A: Serialize, B: DeserializeOwned>(value: &A) -> wasmtime::Result<B> {
    let json = serde_json::to_value(value)
        .map_err(|e| wasmtime::format_err!("translate to contract 0.2.0: {e}"))?;
    serde_json::from_value(json).map_err(|e| wasmtime::format_err!("translate contract 0.2.0: {e}"))
}

/// A 0.2.0 hook's answer (abstain, decide, or fail) as the current one.
pub fn decision<A: Serialize, B: DeserializeOwned>(
    answer: Result<Option<A>, String>,
) -> wasmtime::Result<Result<Option<B>, String>> {
    match answer {
        Ok(Some(decision)) => Ok(Ok(Some(translate(&decision)?))),
        Ok(None) => Ok(Ok(None)),
        Err(message) => Ok(Err(message)),
    }
}

impl bindings::sandman::policy::types::Host for GuestState {}

impl bindings::sandman::policy::host::Host for GuestState {
    fn log(&mut self, level: bindings::sandman::policy::types::LogLevel, message: String) {
        use bindings::sandman::policy::types::LogLevel;
        let level = match level {
            LogLevel::Debug => current_types::LogLevel::Debug,
            LogLevel::Info => current_types::LogLevel::Info,
            LogLevel::Warn => current_types::LogLevel::Warn,
            LogLevel::Error => current_types::LogLevel::Error,
        };
        current_host::Host::log(self, level, message);
    }
}

#[cfg(test)]
mod tests {
    use super::bindings::sandman::policy::types as old;
    use super::*;
    use crate::policy::types as new;

    #[test]
    fn inputs_translate_whole_and_decisions_gain_no_checkpoint() {
        let mut current = crate::policy::input::sample(&[("team", "a")], &[], "{\"x\":1}");
        current.sandbox.template = Some("python".into());
        current.sandbox.claim = Some("job-1".into());
        let old: old::Input = translate(&current).expect("input");
        let back: new::Input = translate(&old).expect("back");
        assert_eq!(back, current, "nothing is lost on the way down");

        let decision = old::LifecycleDecision {
            action: old::LifecycleAction::Suspend,
            reason: "idle".into(),
            requeue_after_seconds: Some(5),
        };
        let read: new::LifecycleDecision = translate(&decision).expect("decision");
        assert_eq!(read.action, new::LifecycleAction::Suspend);
        assert_eq!(read.requeue_after_seconds, Some(5));
        assert_eq!(read.checkpoint, None);
    }
}
