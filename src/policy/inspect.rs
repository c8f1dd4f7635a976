//! What a component is, without running it: its size and digest, the contract version it was
//! built against, the hooks it exports, and everything it imports.

use serde::Serialize;
use wasmparser::{Encoding, Parser, Payload, Validator, WasmFeatures};

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
    /// Reads `wasm`'s interface without compiling it: the component is validated and its
    /// top-level imports and exports are read from its sections, so listing an 18 MB Python
    /// component's hooks costs a parse, not a compile.
    pub fn inspect(&self, wasm: &[u8]) -> Result<Inspection, PolicyError> {
        let Interface { imports, exports } = interface(wasm)?;
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

struct Interface {
    imports: Vec<String>,
    exports: Vec<String>,
}

/// The top-level imports and exports of a valid component. Nested modules and components
/// come in the same payload stream, each between its own `Version` and `End`, so only names
/// at depth one are the component's own.
fn interface(wasm: &[u8]) -> Result<Interface, PolicyError> {
    let invalid = |e: wasmparser::BinaryReaderError| PolicyError::Inspect(e.to_string());
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(wasm)
        .map_err(invalid)?;
    let mut found = Interface {
        imports: Vec::new(),
        exports: Vec::new(),
    };
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(PolicyError::Inspect(
                        "a core module, not a component: build it as a component (wasm32-wasip2, componentize-py or jco)".into(),
                    ));
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    found
                        .imports
                        .push(import.map_err(invalid)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    found
                        .exports
                        .push(export.map_err(invalid)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(found)
}
