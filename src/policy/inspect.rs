//! What a component is, without running it: its size and digest, the contract version it was
//! built against, the hooks it exports, and everything it imports.

use serde::Serialize;
use wasmtime::component::Component;

use super::error::PolicyError;
use super::{Hook, PolicyEngine};
use crate::distribution::sha256_hex;

const CONTRACT: &str = "sandman:policy/";

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub size_bytes: usize,
    pub sha256: String,
    /// `sandman:policy@x.y.z`, from the component's exports.
    pub contract: Option<String>,
    /// Whether this host speaks that contract (the current version or an earlier one it still
    /// loads).
    pub compatible: bool,
    pub hooks: Vec<String>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

impl PolicyEngine {
    /// Compiles `wasm` and reads its interface.
    pub fn inspect(&self, wasm: &[u8]) -> Result<Inspection, PolicyError> {
        let component = Component::new(self.wasmtime(), wasm).map_err(PolicyError::Compile)?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(self.wasmtime())
            .map(|(name, _)| name.to_string())
            .collect();
        let imports: Vec<String> = ty
            .imports(self.wasmtime())
            .map(|(name, _)| name.to_string())
            .collect();
        let contract = exports
            .iter()
            .filter_map(|e| e.strip_prefix(CONTRACT))
            .find_map(|rest| rest.split_once('@'))
            .map(|(_, version)| format!("sandman:policy@{version}"));
        // In the order of `Hook`, whatever order the component lists its exports in.
        let exported: Vec<&str> = exports
            .iter()
            .filter_map(|e| e.strip_prefix(CONTRACT))
            .filter_map(|rest| rest.split('@').next())
            .collect();
        let hooks = Hook::ALL
            .into_iter()
            .filter(|hook| exported.contains(&hook.name()))
            .map(|hook| hook.name().to_string())
            .collect();
        Ok(Inspection {
            size_bytes: wasm.len(),
            sha256: sha256_hex(wasm),
            compatible: contract.as_deref().is_some_and(|c| {
                super::contracts::names()
                    .iter()
                    .any(|version| c == format!("sandman:policy@{version}"))
            }),
            contract,
            hooks,
            exports,
            imports,
        })
    }
}
