//! The CEL policy the engine runs, as the host passes it in the component's settings: the
//! `spec.cel` of a SandboxPolicy without its limits.

use serde::Deserialize;

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CelSpec {
    #[serde(default)]
    pub variables: Vec<Variable>,
    #[serde(default)]
    pub isolation: Option<String>,
    #[serde(default)]
    pub resources: Option<String>,
    #[serde(default)]
    pub lifecycle: Option<String>,
    /// What expressions see as `settings`.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Checks of `settings` when the policy loads.
    #[serde(default)]
    pub settings_validations: Vec<Validation>,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    pub expression: String,
    pub message: String,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    pub name: String,
    pub expression: String,
}

/// The three hooks, with the field that holds each one's expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Isolation,
    Resources,
    Lifecycle,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Isolation, Hook::Resources, Hook::Lifecycle];

    pub fn field(self) -> &'static str {
        match self {
            Hook::Isolation => "spec.cel.isolation",
            Hook::Resources => "spec.cel.resources",
            Hook::Lifecycle => "spec.cel.lifecycle",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn expression(self, spec: &CelSpec) -> Option<&str> {
        match self {
            Hook::Isolation => spec.isolation.as_deref(),
            Hook::Resources => spec.resources.as_deref(),
            Hook::Lifecycle => spec.lifecycle.as_deref(),
        }
    }
}
