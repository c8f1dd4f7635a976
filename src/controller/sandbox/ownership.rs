//! Whose is this object? Server-side apply merges into whatever object has the name, so
//! applying a Service or PVC that someone else made would take it over: its selector replaced,
//! sandman's owner reference added, and, for a PVC, deleted along with the Sandbox. sandman
//! applies only to objects it can prove it made for this Sandbox, and reports the rest.
//!
//! The proof, per kind:
//! - Service: a controller owner reference to this Sandbox's UID.
//! - PVC owned by the Sandbox (`volumeReclaimPolicy: Delete`): the same.
//! - PVC retained from an earlier Sandbox of the same name: no controller owner, the labels
//!   `sandman.dev/sandbox=<name>` and `sandman.dev/claim-template=<template>`, and sandman's
//!   applied-hash annotation. Reserved keys are stripped from every template, so only sandman
//!   (or someone who may write PVCs anyway) writes that combination.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use kube::{Resource, ResourceExt};

use crate::api::{CLAIM_TEMPLATE_LABEL, SANDBOX_LABEL, Sandbox};
use crate::controller::sandbox::children::APPLIED_HASH_ANNOTATION;

fn controller_uid<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

fn controlled_by_sandbox<K: Resource>(object: &K, sandbox: &Sandbox) -> bool {
    sandbox
        .uid()
        .is_some_and(|uid| controller_uid(object) == Some(uid.as_str()))
}

/// True when `service` is this Sandbox's own.
pub fn service_is_ours(service: &Service, sandbox: &Sandbox) -> bool {
    controlled_by_sandbox(service, sandbox)
}

/// True when `claim` is one sandman made for claim template `template` of this Sandbox (or of
/// an earlier Sandbox of the same name, retained for it).
pub fn claim_is_ours(claim: &PersistentVolumeClaim, sandbox: &Sandbox, template: &str) -> bool {
    if controlled_by_sandbox(claim, sandbox) {
        return true;
    }
    let label = |key: &str| claim.labels().get(key).map(String::as_str);
    controller_uid(claim).is_none()
        && label(SANDBOX_LABEL) == Some(sandbox.name_any().as_str())
        && label(CLAIM_TEMPLATE_LABEL) == Some(template)
        && claim.annotations().contains_key(APPLIED_HASH_ANNOTATION)
}

/// The sentence that says why `kind` `name` is not applied.
pub fn conflict(kind: &str, name: &str) -> String {
    format!("{kind} {name} exists and was not made by sandman for this Sandbox")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SandboxSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn sandbox() -> Sandbox {
        let mut sandbox = Sandbox::new("data", SandboxSpec::default());
        sandbox.metadata.uid = Some("uid-1".into());
        sandbox
    }

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "sandman.dev/v1alpha1".into(),
            kind: "Sandbox".into(),
            name: "data".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    fn claim(
        labels: &[(&str, &str)],
        hash: bool,
        owner_uid: Option<&str>,
    ) -> PersistentVolumeClaim {
        let mut claim = PersistentVolumeClaim::default();
        claim.metadata.name = Some("postgres-data".into());
        claim.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if hash {
            claim.metadata.annotations = Some(BTreeMap::from([(
                APPLIED_HASH_ANNOTATION.to_string(),
                "h".to_string(),
            )]));
        }
        claim.metadata.owner_references = owner_uid.map(|uid| vec![owner(uid)]);
        claim
    }

    #[test]
    fn an_administrators_claim_is_never_ours() {
        let sandbox = sandbox();
        assert!(!claim_is_ours(
            &claim(&[], false, None),
            &sandbox,
            "postgres"
        ));
        // Labels alone, as a template could once have set them, are not enough.
        let labelled = [(SANDBOX_LABEL, "data"), (CLAIM_TEMPLATE_LABEL, "postgres")];
        assert!(!claim_is_ours(
            &claim(&labelled, false, None),
            &sandbox,
            "postgres"
        ));
        // Another Sandbox's claim whose name collides (`x-a` + `b` and `x` + `a-b`).
        let other = [(SANDBOX_LABEL, "a-b"), (CLAIM_TEMPLATE_LABEL, "x")];
        assert!(!claim_is_ours(
            &claim(&other, true, None),
            &sandbox,
            "postgres"
        ));
        // Owned by another Sandbox.
        assert!(!claim_is_ours(
            &claim(&labelled, true, Some("uid-2")),
            &sandbox,
            "postgres"
        ));
    }

    #[test]
    fn our_claims_are_ours() {
        let sandbox = sandbox();
        let labelled = [(SANDBOX_LABEL, "data"), (CLAIM_TEMPLATE_LABEL, "postgres")];
        assert!(claim_is_ours(
            &claim(&labelled, true, None),
            &sandbox,
            "postgres"
        ));
        assert!(claim_is_ours(
            &claim(&[], false, Some("uid-1")),
            &sandbox,
            "postgres"
        ));
        assert!(!claim_is_ours(
            &claim(&labelled, true, None),
            &sandbox,
            "other"
        ));
    }

    #[test]
    fn a_service_is_ours_only_by_owner_reference() {
        let sandbox = sandbox();
        let mut service = Service::default();
        service.metadata.labels = Some(BTreeMap::from([(SANDBOX_LABEL.into(), "data".into())]));
        assert!(!service_is_ours(&service, &sandbox));
        service.metadata.owner_references = Some(vec![owner("uid-1")]);
        assert!(service_is_ours(&service, &sandbox));
    }
}
