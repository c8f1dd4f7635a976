//! The SDK for sandman policy authors.
//!
//! A policy crate is a `cdylib` built for `wasm32-wasip2`. It implements the hooks it wants
//! and exports them with [`export_policy!`]:
//!
//! ```ignore
//! use sandman_policy_sdk::{export_policy, Policy, types::*};
//! struct MyPolicy;
//! impl Policy for MyPolicy {
//!     fn isolation(input: Input) -> Result<Option<IsolationDecision>, String> { Ok(None) }
//! }
//! export_policy!(MyPolicy);
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "policy",
    pub_export_macro: true,
    default_bindings_module: "sandman_policy_sdk",
});

pub mod quantity;
pub mod testing;
pub mod wire;

pub use exports::sandman::policy::{isolation, lifecycle, pool, resources, settings};
pub use sandman::policy::host::log;
pub use sandman::policy::types;

use types::{
    Input, IsolationDecision, LifecycleDecision, PoolDecision, PoolInput, ResourcesDecision,
    SecurityOverrides,
};

/// A policy: every hook abstains unless the policy says otherwise.
pub trait Policy {
    /// Checks the settings once, at load time.
    fn validate_settings(_settings: &str) -> Result<(), String> {
        Ok(())
    }
    fn isolation(_input: Input) -> Result<Option<IsolationDecision>, String> {
        Ok(None)
    }
    fn resources(_input: Input) -> Result<Option<ResourcesDecision>, String> {
        Ok(None)
    }
    fn lifecycle(_input: Input) -> Result<Option<LifecycleDecision>, String> {
        Ok(None)
    }
    /// The size of a warm pool of Sandboxes.
    fn pool(_input: PoolInput) -> Result<Option<PoolDecision>, String> {
        Ok(None)
    }
}

/// Exports a [`Policy`] as the component's hooks.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            struct Exported;
            impl $crate::settings::Guest for Exported {
                fn validate_settings(settings: String) -> Result<(), String> {
                    <$policy as $crate::Policy>::validate_settings(&settings)
                }
            }
            impl $crate::isolation::Guest for Exported {
                fn decide(
                    input: $crate::types::Input,
                ) -> Result<Option<$crate::types::IsolationDecision>, String> {
                    <$policy as $crate::Policy>::isolation(input)
                }
            }
            impl $crate::resources::Guest for Exported {
                fn decide(
                    input: $crate::types::Input,
                ) -> Result<Option<$crate::types::ResourcesDecision>, String> {
                    <$policy as $crate::Policy>::resources(input)
                }
            }
            impl $crate::lifecycle::Guest for Exported {
                fn decide(
                    input: $crate::types::Input,
                ) -> Result<Option<$crate::types::LifecycleDecision>, String> {
                    <$policy as $crate::Policy>::lifecycle(input)
                }
            }
            impl $crate::pool::Guest for Exported {
                fn decide(
                    input: $crate::types::PoolInput,
                ) -> Result<Option<$crate::types::PoolDecision>, String> {
                    <$policy as $crate::Policy>::pool(input)
                }
            }
    $crate::export!(Exported with_types_in $crate);
        };
    };
}

/// The value of label `key`, if set.
pub fn label<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parses the policy's JSON settings into `T`, with a message that names the problem.
pub fn parse_settings<T: serde::de::DeserializeOwned>(settings: &str) -> Result<T, String> {
    let text = if settings.trim().is_empty() {
        "{}"
    } else {
        settings
    };
    serde_json::from_str(text).map_err(|e| format!("invalid settings: {e}"))
}

/// Security overrides that change nothing.
pub fn no_security_overrides() -> SecurityOverrides {
    SecurityOverrides {
        run_as_non_root: None,
        run_as_user: None,
        read_only_root_filesystem: None,
        allow_privilege_escalation: None,
        host_users: None,
        seccomp_profile: None,
    }
}
