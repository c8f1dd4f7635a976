//! The contract versions the host speaks, one adapter file each: how a component built against
//! that version is linked, which hooks it exports, and how each call is translated to and from
//! the current types. A new contract version is one new file here and one line in [`VERSIONS`].

/// One hook's call through the component's exports: `$input` in the version's types, its
/// answer turned into the current one by `$up`.
macro_rules! call_hook {
    ($exports:ident . $hook:ident, $store:ident, $instance:ident, $input:expr, $up:expr) => {{
        let Some(indices) = &$exports.$hook else {
            return Err(wasmtime::format_err!(concat!(
                "no ",
                stringify!($hook),
                " export"
            )));
        };
        // Bound first: for the current contract it is the caller's own reference.
        let input = $input;
        let answer = indices
            .load(&mut *$store, $instance)?
            .call_decide(&mut *$store, &input)?;
        $up(answer)
    }};
}

/// `validate-settings` through the component's exports.
macro_rules! validate_settings {
    ($exports:ident, $store:ident, $instance:ident, $settings:ident) => {{
        let Some(indices) = $exports.settings.as_ref() else {
            return Err(wasmtime::format_err!("no settings export"));
        };
        indices
            .load(&mut *$store, $instance)?
            .call_validate_settings(&mut *$store, $settings)
    }};
}

/// The `Exports` of a contract version's adapter `$ty` (fields `settings`, `isolation`,
/// `resources`, `lifecycle`, and `pool` when the version has that hook): each hook's input goes
/// down through `$down`, and its answer comes up through `$up`.
macro_rules! exports_impl {
    ($ty:ident, down: $down:path, up: $up:path, pool: $pool:tt) => {
        impl Exports for $ty {
            fn version(&self) -> &'static str {
                VERSION.name
            }

            fn has(&self, hook: Hook) -> bool {
                match hook {
                    Hook::Isolation => self.isolation.is_some(),
                    Hook::Resources => self.resources.is_some(),
                    Hook::Lifecycle => self.lifecycle.is_some(),
                    Hook::Pool => exports_impl!(@has_pool self, $pool),
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
                call_hook!(self.isolation, store, instance, $down(input)?, $up)
            }

            fn resources(
                &self,
                store: &mut wasmtime::Store<GuestState>,
                instance: &Instance,
                input: &types::Input,
            ) -> Call<types::ResourcesDecision> {
                call_hook!(self.resources, store, instance, $down(input)?, $up)
            }

            fn lifecycle(
                &self,
                store: &mut wasmtime::Store<GuestState>,
                instance: &Instance,
                input: &types::Input,
            ) -> Call<types::LifecycleDecision> {
                call_hook!(self.lifecycle, store, instance, $down(input)?, $up)
            }

            fn pool(
                &self,
                store: &mut wasmtime::Store<GuestState>,
                instance: &Instance,
                input: &types::PoolInput,
            ) -> Call<types::PoolDecision> {
                exports_impl!(@pool self, store, instance, input, $down, $up, $pool)
            }
        }
    };
    (@has_pool $exports:ident, yes) => {
        $exports.pool.is_some()
    };
    (@has_pool $exports:ident, no) => {
        false
    };
    (@pool $exports:ident, $store:ident, $instance:ident, $input:ident, $down:path, $up:path, yes) => {
        call_hook!($exports.pool, $store, $instance, $down($input)?, $up)
    };
    (@pool $exports:ident, $store:ident, $instance:ident, $input:ident, $down:path, $up:path, no) => {{
        let _ = ($store, $instance, $input);
        Err(wasmtime::format_err!("contract {} has no pool hook", VERSION.name))
    }};
}

/// A contract version's adapter: its [`Version`] (as `VERSION`), the type `$ty` holding the
/// component's exports of that version (`settings` and each of `$hook`), and its [`Exports`].
/// `$world` is the version's generated world; `$down` and `$up` translate inputs and answers.
macro_rules! adapter {
    (
        $ty:ident, $version:literal, world: $world:ty, hooks: [$($hook:ident),*],
        down: $down:path, up: $up:path, pool: $pool:tt
    ) => {
        pub const VERSION: Version = Version {
            name: $version,
            link: |linker: &mut Linker<GuestState>| {
                <$world>::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
            },
            exports: |pre| {
                let exports = $ty::of(pre);
                Hook::ALL
                    .into_iter()
                    .any(|hook| exports.has(hook))
                    .then(|| Box::new(exports) as Box<dyn Exports>)
            },
        };

        #[derive(Default)]
        pub struct $ty {
            settings: Option<settings::GuestIndices>,
            $($hook: Option<$hook::GuestIndices>,)*
        }

        impl $ty {
            fn of(pre: &InstancePre<GuestState>) -> Self {
                Self {
                    settings: settings::GuestIndices::new(pre).ok(),
                    $($hook: $hook::GuestIndices::new(pre).ok(),)*
                }
            }
        }

        exports_impl!($ty, down: $down, up: $up, pool: $pool);
    };
}

mod current;
mod v0_1;
mod v0_2;

use wasmtime::Engine;
use wasmtime::component::{Component, Instance, InstancePre, Linker};

use super::error::PolicyError;
use super::store::GuestState;
use super::{Hook, types};

/// What a hook call returns: a trap or host error, the guest's own `err`, or its decision
/// (`None`: it abstains).
pub type Call<D> = wasmtime::Result<Result<Option<D>, String>>;

/// A component's exports, read as one contract version.
pub trait Exports: Send + Sync {
    /// The version, as in `sandman:policy/…@<version>`.
    fn version(&self) -> &'static str;
    /// Whether the component exports `hook`: asked on every evaluation, so no allocation.
    fn has(&self, hook: Hook) -> bool;
    /// Whether the component exports `validate-settings`, which every policy must.
    fn has_settings(&self) -> bool;
    fn validate_settings(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        settings: &str,
    ) -> wasmtime::Result<Result<(), String>>;
    fn isolation(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        input: &types::Input,
    ) -> Call<types::IsolationDecision>;
    fn resources(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        input: &types::Input,
    ) -> Call<types::ResourcesDecision>;
    fn lifecycle(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        input: &types::Input,
    ) -> Call<types::LifecycleDecision>;
    fn pool(
        &self,
        store: &mut wasmtime::Store<GuestState>,
        instance: &Instance,
        input: &types::PoolInput,
    ) -> Call<types::PoolDecision>;
}

/// One contract version the host loads.
pub struct Version {
    pub name: &'static str,
    /// Adds the version's host interfaces (`host.log`) to the linker.
    pub link: fn(&mut Linker<GuestState>) -> wasmtime::Result<()>,
    /// The component's exports as this version, `None` when it exports no hook of it.
    pub exports: fn(&InstancePre<GuestState>) -> Option<Box<dyn Exports>>,
}

/// Every version the host loads, newest first.
pub const VERSIONS: [Version; 3] = [current::VERSION, v0_2::VERSION, v0_1::VERSION];

/// The contract this host speaks, and names exports by.
pub const CONTRACT: &str = "sandman:policy/";
pub const CONTRACT_VERSION: &str = current::VERSION.name;

/// Every version's name, newest first.
pub fn names() -> Vec<&'static str> {
    VERSIONS.iter().map(|v| v.name).collect()
}

/// Adds every version's host interfaces to `linker`.
pub fn link_all(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    VERSIONS
        .iter()
        .try_for_each(|version| (version.link)(linker))
}

/// The component's exports, read as the newest version it exports a hook of; the current
/// version, exporting nothing, when it exports none.
pub fn exports_of(pre: &InstancePre<GuestState>) -> Box<dyn Exports> {
    VERSIONS
        .iter()
        .find_map(|version| (version.exports)(pre))
        .unwrap_or_else(|| Box::new(current::Current::default()))
}

/// A clear error for a component built against another version of the contract, whose exports
/// the host therefore does not see.
pub fn other_version(engine: &Engine, component: &Component) -> Option<PolicyError> {
    let supported = names();
    let versions: Vec<String> = component
        .component_type()
        .exports(engine)
        .filter_map(|(name, _)| name.strip_prefix(CONTRACT).map(str::to_string))
        .filter_map(|rest| rest.split_once('@').map(|(_, version)| version.to_string()))
        .filter(|version| !supported.contains(&version.as_str()))
        .collect();
    let version = versions.first()?;
    Some(PolicyError::OtherContractVersion {
        found: version.clone(),
        supported,
    })
}
