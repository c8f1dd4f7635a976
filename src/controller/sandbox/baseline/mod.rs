//! The pod baseline: what a Sandbox may ask of its pod and its volumes. The pod template is
//! the tenant's, and creating a Sandbox must not amount to creating any pod at all. The
//! baseline is Pod Security's `restricted` profile, point by point, plus what a cluster shared
//! by hostile tenants needs on top: no ServiceAccount token in any form, no way around the
//! scheduler, and no volume that was not made for this Sandbox. Pure: the pod (after hardening
//! and the policies' decisions), the PVC templates and what the Secrets the pod names are go
//! in; findings come out, each under the one [`PodPrivilege`] an isolation policy's
//! `podSecurity.allow` names to let it through. SECURITY.md maps each rule to its test.
//!
//! Explicit values are judged, never quietly kept: the hardened defaults fill only what the
//! template leaves unset, so `runAsUser: 0` or `capabilities.drop: []` written by a tenant is
//! a finding here.

mod claims;
mod context;
mod pod;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimTemplate, Pod};

use crate::api::{PodPrivilege, PodSecurityAllowance};

pub use pod::referenced_secrets;

/// Added capabilities every pod may have: the restricted profile allows it too.
const ALWAYS_ALLOWED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// Which exemption lets a finding through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exemption {
    Privilege(PodPrivilege),
    /// An added Linux capability, by its bare name (`SYS_ADMIN`).
    Capability(String),
}

/// One thing the pod asks beyond the baseline, in one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub exemption: Exemption,
    pub what: String,
}

impl Finding {
    fn new(privilege: PodPrivilege, what: impl Into<String>) -> Self {
        Self {
            exemption: Exemption::Privilege(privilege),
            what: what.into(),
        }
    }
}

/// What a Secret the pod names is, as far as the baseline cares. A ServiceAccount token is
/// one whatever the route (volume, projection, env), and a Secret that cannot be looked at
/// could be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretKind {
    Plain,
    ServiceAccountToken,
    /// Missing or unreadable, in words: it may become a token before the kubelet mounts it.
    Unknown(String),
}

/// The Secrets the pod names, by name.
pub type Secrets = BTreeMap<String, SecretKind>;

/// The findings an allowance leaves, and those it lets through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judged {
    pub refused: Vec<String>,
    pub exempted: Vec<String>,
}

/// Everything the pod and its volumes ask beyond the baseline.
pub fn findings(
    pod: &Pod,
    claim_templates: &[PersistentVolumeClaimTemplate],
    secrets: &Secrets,
) -> Vec<Finding> {
    let mut found = Vec::new();
    if let Some(spec) = &pod.spec {
        found.extend(pod::findings(spec, secrets));
        found.extend(context::findings(spec));
    }
    found.extend(pod::annotation_findings(&pod.metadata.annotations));
    found.extend(claims::findings(claim_templates));
    found
}

/// Splits findings into those the allowance refuses and those it lets through.
pub fn judge(findings: Vec<Finding>, allowance: &PodSecurityAllowance) -> Judged {
    let mut judged = Judged::default();
    for finding in findings {
        if allows(allowance, &finding.exemption) {
            judged.exempted.push(finding.what);
        } else {
            judged.refused.push(finding.what);
        }
    }
    judged
}

fn allows(allowance: &PodSecurityAllowance, exemption: &Exemption) -> bool {
    match exemption {
        Exemption::Privilege(privilege) => allowance.allow.contains(privilege),
        Exemption::Capability(name) => allowance
            .capabilities
            .iter()
            .any(|c| c.trim_start_matches("CAP_") == name),
    }
}

#[cfg(test)]
mod tests;
