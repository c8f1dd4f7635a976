//! The SDK for sandman policy authors.
//!
//! A policy crate is a `cdylib` built for `wasm32-wasip2`. It implements the hooks it wants
//! and exports them, and only them, with [`export_policy!`]:
//!
//! ```ignore
//! use sandman_policy_sdk::{export_policy, Policy, types::*};
//! struct MyPolicy;
//! impl Policy for MyPolicy {
//!     fn isolation(input: Input) -> Result<Option<IsolationDecision>, String> { Ok(None) }
//! }
//! export_policy!(MyPolicy, [isolation]);
//! ```
//!
//! The host calls only the hooks a component exports, and `sandman policy inspect` lists them.

// `base`: the host's `log` and the `settings` export every policy has. Each hook comes from a
// world of its own, sharing `base`'s types, so a policy exports exactly the hooks it names.
wit_bindgen::generate!({
    path: "../../wit",
    world: "base",
    pub_export_macro: true,
    export_macro_name: "export_base",
    default_bindings_module: "sandman_policy_sdk",
});

/// Bindings of one hook's world each; see [`export_policy!`].
pub mod hooks {
    pub mod isolation {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "isolation-hook",
            pub_export_macro: true,
            export_macro_name: "export_isolation",
            default_bindings_module: "sandman_policy_sdk::hooks::isolation",
            with: { "sandman:policy/types@0.3.0": crate::sandman::policy::types },
        });
    }
    pub mod resources {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "resources-hook",
            pub_export_macro: true,
            export_macro_name: "export_resources",
            default_bindings_module: "sandman_policy_sdk::hooks::resources",
            with: { "sandman:policy/types@0.3.0": crate::sandman::policy::types },
        });
    }
    pub mod lifecycle {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "lifecycle-hook",
            pub_export_macro: true,
            export_macro_name: "export_lifecycle",
            default_bindings_module: "sandman_policy_sdk::hooks::lifecycle",
            with: { "sandman:policy/types@0.3.0": crate::sandman::policy::types },
        });
    }
    pub mod pool {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "pool-hook",
            pub_export_macro: true,
            export_macro_name: "export_pool",
            default_bindings_module: "sandman_policy_sdk::hooks::pool",
            with: { "sandman:policy/types@0.3.0": crate::sandman::policy::types },
        });
    }
}

pub mod quantity;
pub mod testing;
pub mod wire;

pub use exports::sandman::policy::settings;
pub use hooks::isolation::exports::sandman::policy::isolation;
pub use hooks::lifecycle::exports::sandman::policy::lifecycle;
pub use hooks::pool::exports::sandman::policy::pool;
pub use hooks::resources::exports::sandman::policy::resources;
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

/// Exports a [`Policy`]: `settings`, and the hooks listed, of `isolation`, `resources`,
/// `lifecycle` and `pool`. A hook not listed is not exported, so the host never calls it.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty, [$($hook:ident),+ $(,)?]) => {
        const _: () = {
            struct Exported;
            impl $crate::settings::Guest for Exported {
                fn validate_settings(settings: String) -> Result<(), String> {
                    <$policy as $crate::Policy>::validate_settings(&settings)
                }
            }
            $crate::export_base!(Exported with_types_in $crate);
            $( $crate::__export_hook!($hook, $policy, Exported); )+
        };
    };
    ($policy:ty) => {
        compile_error!(
            "name the hooks the policy implements: export_policy!(MyPolicy, [isolation, lifecycle])"
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    (isolation, $policy:ty, $exported:ident) => {
        impl $crate::isolation::Guest for $exported {
            fn decide(
                input: $crate::types::Input,
            ) -> Result<Option<$crate::types::IsolationDecision>, String> {
                <$policy as $crate::Policy>::isolation(input)
            }
        }
        $crate::hooks::isolation::export_isolation!($exported with_types_in $crate::hooks::isolation);
    };
    (resources, $policy:ty, $exported:ident) => {
        impl $crate::resources::Guest for $exported {
            fn decide(
                input: $crate::types::Input,
            ) -> Result<Option<$crate::types::ResourcesDecision>, String> {
                <$policy as $crate::Policy>::resources(input)
            }
        }
        $crate::hooks::resources::export_resources!($exported with_types_in $crate::hooks::resources);
    };
    (lifecycle, $policy:ty, $exported:ident) => {
        impl $crate::lifecycle::Guest for $exported {
            fn decide(
                input: $crate::types::Input,
            ) -> Result<Option<$crate::types::LifecycleDecision>, String> {
                <$policy as $crate::Policy>::lifecycle(input)
            }
        }
        $crate::hooks::lifecycle::export_lifecycle!($exported with_types_in $crate::hooks::lifecycle);
    };
    (pool, $policy:ty, $exported:ident) => {
        impl $crate::pool::Guest for $exported {
            fn decide(
                input: $crate::types::PoolInput,
            ) -> Result<Option<$crate::types::PoolDecision>, String> {
                <$policy as $crate::Policy>::pool(input)
            }
        }
        $crate::hooks::pool::export_pool!($exported with_types_in $crate::hooks::pool);
    };
    ($other:ident, $policy:ty, $exported:ident) => {
        compile_error!(concat!(
            "unknown hook `",
            stringify!($other),
            "`: the hooks are isolation, resources, lifecycle and pool"
        ));
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
