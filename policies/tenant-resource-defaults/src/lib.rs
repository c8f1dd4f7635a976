//! Resources policy: default requests and caps per tenant, from settings. A tenant is the value
//! of a namespace label (default `tenant`); a Sandbox in a namespace without it gets `default`.
//!
//! Settings:
//! ```json
//! {"tenantLabel": "tenant",
//!  "tenants": {"default": {"defaults": {"cpu": "250m", "memory": "512Mi"},
//!                          "caps": {"cpu": "2", "memory": "4Gi"}}}}
//! ```

use std::collections::BTreeMap;

use sandman_policy_sdk::types::{ComputeResources, ContainerResources, Input, ResourcesDecision};
use sandman_policy_sdk::{Policy, export_policy, label, parse_settings};

#[derive(serde::Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Quantities {
    cpu: Option<String>,
    memory: Option<String>,
    #[serde(rename = "ephemeral-storage")]
    ephemeral_storage: Option<String>,
}

impl From<Quantities> for ComputeResources {
    fn from(q: Quantities) -> Self {
        ComputeResources {
            cpu: q.cpu,
            memory: q.memory,
            ephemeral_storage: q.ephemeral_storage,
        }
    }
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Tenant {
    #[serde(default)]
    defaults: Quantities,
    #[serde(default)]
    caps: Quantities,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_label")]
    tenant_label: String,
    tenants: BTreeMap<String, Tenant>,
}

fn default_label() -> String {
    "tenant".into()
}

struct TenantResourceDefaults;

impl Policy for TenantResourceDefaults {
    fn validate_settings(settings: &str) -> Result<(), String> {
        let settings: Settings = parse_settings(settings)?;
        if settings.tenants.is_empty() {
            return Err("tenants must name at least one tenant".into());
        }
        Ok(())
    }

    fn resources(input: Input) -> Result<Option<ResourcesDecision>, String> {
        let settings: Settings = parse_settings(&input.settings)?;
        let tenant =
            label(&input.sandbox.namespace_labels, &settings.tenant_label).unwrap_or("default");
        let Some(found) = settings
            .tenants
            .get(tenant)
            .or_else(|| settings.tenants.get("default"))
        else {
            return Ok(None);
        };
        Ok(Some(ResourcesDecision {
            containers: vec![ContainerResources {
                container: None,
                defaults: found.defaults.clone().into(),
                caps: found.caps.clone().into(),
            }],
            reason: format!("resource defaults of tenant {tenant}"),
        }))
    }
}

export_policy!(TenantResourceDefaults, [resources]);
