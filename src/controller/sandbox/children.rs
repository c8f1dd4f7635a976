//! The desired children of a Sandbox: its Pod, its headless Service and its PVCs. Pure
//! functions of the Sandbox, so every rule here is unit-tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimTemplate, PersistentVolumeClaimVolumeSource, Pod,
    PodSpec, Service, ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::{
    CLAIM_POD_METADATA_ANNOTATION, CLAIM_TEMPLATE_LABEL, PodMetadata, RESERVED_PREFIX,
    SANDBOX_LABEL, Sandbox, TEMPLATE_HASH_ANNOTATION, VolumeReclaimPolicy,
};
use crate::controller::hash::content_hash;
use crate::controller::sandbox::decisions::{Decisions, apply_isolation, apply_resources};
use crate::controller::sandbox::hardening::harden;
use crate::policy::types::IsolationDecision;

/// On Services and PVCs: the hash of what sandman last applied, so an unchanged child costs no
/// write.
pub const APPLIED_HASH_ANNOTATION: &str = "sandman.dev/applied-hash";

/// The PVC made for claim template `template` of Sandbox `sandbox` (upstream's naming).
pub fn claim_name(template: &str, sandbox: &str) -> String {
    format!("{template}-{sandbox}")
}

/// The name a claim template gives itself (and the pod volume it backs).
pub fn claim_template_name(template: &PersistentVolumeClaimTemplate) -> String {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.name.clone())
        .unwrap_or_default()
}

/// Drops every key under the reserved `sandman.dev/` prefix.
pub fn strip_reserved(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn owner_reference(sandbox: &Sandbox) -> Option<OwnerReference> {
    sandbox.controller_owner_ref(&())
}

fn sandbox_labels(sandbox: &Sandbox) -> BTreeMap<String, String> {
    BTreeMap::from([(SANDBOX_LABEL.to_string(), sandbox.name_any())])
}

/// The label selector of a Sandbox's children, as `kubectl` takes it.
pub fn selector(sandbox: &Sandbox) -> String {
    format!("{SANDBOX_LABEL}={}", sandbox.name_any())
}

/// The pod spec the Sandbox asks for: the template with reserved labels stripped, volumes for
/// its claims, a stable hostname and subdomain, and hardened defaults.
pub fn desired_pod_spec(sandbox: &Sandbox, decisions: &Decisions) -> PodSpec {
    let name = sandbox.name_any();
    let mut spec = sandbox.spec.pod_template.spec.clone();
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for template in &sandbox.spec.volume_claim_templates {
        let template_name = claim_template_name(template);
        let source = PersistentVolumeClaimVolumeSource {
            claim_name: claim_name(&template_name, &name),
            read_only: None,
        };
        match volumes.iter_mut().find(|v| v.name == template_name) {
            // The template names the volume; sandman decides what backs it.
            Some(volume) => {
                *volume = Volume {
                    name: template_name,
                    persistent_volume_claim: Some(source),
                    ..Default::default()
                }
            }
            None => volumes.push(Volume {
                name: template_name,
                persistent_volume_claim: Some(source),
                ..Default::default()
            }),
        }
    }
    if volumes.is_empty() {
        spec.volumes = None;
    }
    spec.hostname.get_or_insert_with(|| name.clone());
    if sandbox.spec.wants_service() {
        spec.subdomain.get_or_insert_with(|| name.clone());
    }
    harden(&mut spec);
    if let Some((_, isolation)) = &decisions.isolation {
        apply_isolation(&mut spec, isolation);
    }
    if let Some(merged) = &decisions.resources {
        apply_resources(&mut spec, merged);
    }
    if let Some(runtime) = &decisions.runtime {
        super::runtime::inject(&mut spec, runtime);
    }
    // What the operator tells the supervisor (its token, what to restore) is not part of the
    // template hash, so a new checkpoint never replaces a running pod.
    if let Some(supervisor) = &decisions.supervisor {
        let restore = super::checkpointing::restore_env(sandbox);
        super::supervisor::inject(&mut spec, sandbox, supervisor, &restore);
    }
    spec
}

/// The Pod for a Sandbox. Its name is the Sandbox's, which is what makes it a singleton: the
/// API server never holds two objects of one name.
pub fn desired_pod(sandbox: &Sandbox, decisions: &Decisions) -> Pod {
    let template_meta = sandbox
        .spec
        .pod_template
        .metadata
        .clone()
        .unwrap_or_default();
    let spec = desired_pod_spec(sandbox, decisions);
    let claimed = claim_pod_metadata(sandbox);
    let mut labels = strip_reserved(&template_meta.labels);
    labels.extend(strip_reserved(&claimed.labels));
    labels.extend(sandbox_labels(sandbox));
    // A Sandbox made from a template: its pod is selected by the template's NetworkPolicy.
    if let Some(template) = sandbox
        .labels()
        .get(crate::controller::blueprint::TEMPLATE_LABEL)
    {
        labels.insert(
            crate::controller::blueprint::TEMPLATE_LABEL.to_string(),
            template.clone(),
        );
    }
    let mut annotations = strip_reserved(&template_meta.annotations);
    annotations.extend(strip_reserved(&claimed.annotations));
    annotations.insert(
        TEMPLATE_HASH_ANNOTATION.into(),
        template_hash(sandbox, decisions),
    );
    if let Some(checkpoint) = super::checkpointing::pending_restore(sandbox)
        && decisions.supervisor.is_some()
    {
        annotations.insert(
            super::checkpointing::RESTORE_ANNOTATION.into(),
            checkpoint.image.clone(),
        );
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(sandbox.name_any()),
            namespace: sandbox.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner_reference(sandbox).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The pod metadata a claim that took this Sandbox from a warm pool asked for (none when the
/// annotation is absent or unreadable: it is sandman's own, written with the take).
pub fn claim_pod_metadata(sandbox: &Sandbox) -> PodMetadata {
    sandbox
        .annotations()
        .get(CLAIM_POD_METADATA_ANNOTATION)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// Whether an isolation decision changes the pod at all (and not only its network).
fn shapes_the_pod(decision: &IsolationDecision) -> bool {
    let security = &decision.security;
    decision.runtime_class_name.is_some()
        || !decision.node_selector.is_empty()
        || !decision.tolerations.is_empty()
        || security.run_as_non_root.is_some()
        || security.run_as_user.is_some()
        || security.read_only_root_filesystem.is_some()
        || security.allow_privilege_escalation.is_some()
        || security.host_users.is_some()
        || security.seccomp_profile.is_some()
}

/// A hash of everything the pod is built from, policy decisions included; a pod with another
/// hash is out of date.
pub fn template_hash(sandbox: &Sandbox, decisions: &Decisions) -> String {
    // The network profile goes into the Sandbox's NetworkPolicy, not its pod: a new profile
    // must not replace a running pod, and neither must a decision that only chooses one.
    let isolation = decisions
        .isolation
        .as_ref()
        .map(|(_, d)| d)
        .filter(|d| shapes_the_pod(d))
        .map(|d| {
            let mut d = d.clone();
            d.network = None;
            d
        });
    content_hash(&(
        &sandbox.spec.pod_template,
        &sandbox.spec.volume_claim_templates,
        sandbox.spec.wants_service(),
        isolation.as_ref(),
        decisions.resources.as_ref().map(|r| &r.containers),
    ))
}

/// The headless Service that gives the Sandbox its stable DNS name.
pub fn desired_service(sandbox: &Sandbox) -> Service {
    let mut service = Service {
        metadata: ObjectMeta {
            name: Some(sandbox.name_any()),
            namespace: sandbox.namespace(),
            labels: Some(sandbox_labels(sandbox)),
            owner_references: owner_reference(sandbox).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(sandbox_labels(sandbox)),
            // A resuming agent is reachable by name before its readiness probe passes.
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        status: None,
    };
    stamp_applied_hash(&mut service.metadata);
    service
}

/// The PVCs of a Sandbox. They are owned by the Sandbox only under `volumeReclaimPolicy:
/// Delete`; under `Retain` they outlive it, labelled for re-attachment.
pub fn desired_claims(sandbox: &Sandbox) -> Vec<PersistentVolumeClaim> {
    let name = sandbox.name_any();
    let owned = sandbox.spec.volume_reclaim_policy == VolumeReclaimPolicy::Delete;
    sandbox
        .spec
        .volume_claim_templates
        .iter()
        .map(|template| {
            let template_name = claim_template_name(template);
            let template_meta = template.metadata.clone().unwrap_or_default();
            let mut labels = strip_reserved(&template_meta.labels.clone().unwrap_or_default());
            labels.extend(sandbox_labels(sandbox));
            labels.insert(CLAIM_TEMPLATE_LABEL.into(), template_name.clone());
            let annotations =
                strip_reserved(&template_meta.annotations.clone().unwrap_or_default());
            let mut claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&template_name, &name)),
                    namespace: sandbox.namespace(),
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    owner_references: if owned {
                        owner_reference(sandbox).map(|o| vec![o])
                    } else {
                        None
                    },
                    ..Default::default()
                },
                spec: Some(template.spec.clone()),
                status: None,
            };
            stamp_applied_hash(&mut claim.metadata);
            claim
        })
        .collect()
}

/// Records the hash of the object as it is about to be applied, so the next reconcile can see
/// from its cache that nothing changed.
fn stamp_applied_hash(metadata: &mut ObjectMeta) {
    let hash = content_hash(&*metadata);
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
}

/// True when every label and owner reference `desired` sets is on `current` as desired.
fn metadata_intact(current: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let labels = current.labels.clone().unwrap_or_default();
    let owners = current.owner_references.clone().unwrap_or_default();
    desired
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && desired
            .owner_references
            .iter()
            .flatten()
            .all(|o| owners.contains(o))
}

/// True when a Service needs no write: the applied hash matches, and the fields that decide
/// what the name reaches (selector, headlessness, labels, owner) are as sandman set them. A
/// hash alone once let a hand-edited selector stand for good.
pub fn service_in_place(current: &Service, desired: &Service) -> bool {
    let spec = |s: &Service| s.spec.clone().unwrap_or_default();
    let (now, want) = (spec(current), spec(desired));
    unchanged(current, desired)
        && metadata_intact(&current.metadata, &desired.metadata)
        && now.selector == want.selector
        && now.cluster_ip == want.cluster_ip
        && now.publish_not_ready_addresses == want.publish_not_ready_addresses
}

/// Selector keys on `current` that sandman did not set: a server-side apply leaves keys other
/// managers own, so these are removed by name.
pub fn foreign_selector_keys(current: &Service, desired: &Service) -> Vec<String> {
    let selector = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default()
    };
    let want = selector(desired);
    selector(current)
        .into_keys()
        .filter(|k| !want.contains_key(k))
        .collect()
}

/// True when a PVC needs no write: the applied hash matches and its labels and owner are as
/// sandman set them. (Its spec is immutable once bound.)
pub fn claim_in_place(current: &PersistentVolumeClaim, desired: &PersistentVolumeClaim) -> bool {
    unchanged(current, desired) && metadata_intact(&current.metadata, &desired.metadata)
}

/// True when `current` carries the same applied hash as `desired`: applying again would be a
/// no-op write.
pub fn unchanged<K: Resource>(current: &K, desired: &K) -> bool {
    let hash = |k: &K| {
        k.meta()
            .annotations
            .as_ref()?
            .get(APPLIED_HASH_ANNOTATION)
            .cloned()
    };
    hash(current).is_some() && hash(current) == hash(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PodTemplate, SandboxSpec, TemplateMetadata};
    use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaimSpec};

    fn sandbox(policy: VolumeReclaimPolicy) -> Sandbox {
        let mut sandbox = Sandbox::new(
            "agent",
            SandboxSpec {
                pod_template: PodTemplate {
                    metadata: Some(TemplateMetadata {
                        labels: BTreeMap::from([
                            ("app".into(), "agent".into()),
                            (SANDBOX_LABEL.into(), "someone-else".into()),
                            ("sandman.dev/anything".into(), "x".into()),
                        ]),
                        annotations: BTreeMap::from([(
                            "sandman.dev/last-activity".into(),
                            "x".into(),
                        )]),
                    }),
                    spec: PodSpec {
                        containers: vec![Container {
                            name: "agent".into(),
                            image: Some("busybox".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                },
                volume_claim_templates: vec![PersistentVolumeClaimTemplate {
                    metadata: Some(ObjectMeta {
                        name: Some("workspace".into()),
                        ..Default::default()
                    }),
                    spec: PersistentVolumeClaimSpec::default(),
                }],
                volume_reclaim_policy: policy,
                ..Default::default()
            },
        );
        sandbox.metadata.namespace = Some("team".into());
        sandbox.metadata.uid = Some("uid-1".into());
        sandbox
    }

    #[test]
    fn reserved_labels_never_reach_the_pod() {
        let pod = desired_pod(&sandbox(VolumeReclaimPolicy::Retain), &Decisions::default());
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels.get(SANDBOX_LABEL).map(String::as_str), Some("agent"));
        assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
        assert!(!labels.contains_key("sandman.dev/anything"));
        let annotations = pod.metadata.annotations.expect("annotations");
        assert!(!annotations.contains_key("sandman.dev/last-activity"));
        assert!(annotations.contains_key(TEMPLATE_HASH_ANNOTATION));
    }

    #[test]
    fn pod_mounts_its_claims_with_a_stable_identity() {
        let pod = desired_pod(&sandbox(VolumeReclaimPolicy::Retain), &Decisions::default());
        let spec = pod.spec.expect("spec");
        let volume = &spec.volumes.expect("volumes")[0];
        assert_eq!(volume.name, "workspace");
        assert_eq!(
            volume
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("workspace-agent")
        );
        assert_eq!(spec.hostname.as_deref(), Some("agent"));
        assert_eq!(spec.subdomain.as_deref(), Some("agent"));
        let owner = &pod.metadata.owner_references.expect("owner")[0];
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn claim_ownership_follows_reclaim_policy() {
        let retained = desired_claims(&sandbox(VolumeReclaimPolicy::Retain));
        assert_eq!(retained[0].metadata.owner_references, None);
        let labels = retained[0].metadata.labels.clone().expect("labels");
        assert_eq!(
            labels.get(CLAIM_TEMPLATE_LABEL).map(String::as_str),
            Some("workspace")
        );
        let deleted = desired_claims(&sandbox(VolumeReclaimPolicy::Delete));
        assert_eq!(
            deleted[0].metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn a_hand_edited_service_is_not_in_place() {
        let desired = desired_service(&sandbox(VolumeReclaimPolicy::Retain));
        assert!(service_in_place(&desired.clone(), &desired));
        let mut edited = desired.clone();
        if let Some(spec) = edited.spec.as_mut() {
            spec.selector = Some(BTreeMap::from([
                (SANDBOX_LABEL.to_string(), "agent".to_string()),
                ("app".to_string(), "db".to_string()),
            ]));
        }
        assert!(!service_in_place(&edited, &desired));
        assert_eq!(
            foreign_selector_keys(&edited, &desired),
            vec!["app".to_string()]
        );
        let mut relabelled = desired.clone();
        relabelled.metadata.labels = None;
        assert!(!service_in_place(&relabelled, &desired));
    }

    #[test]
    fn applied_hash_detects_changes() {
        let a = desired_service(&sandbox(VolumeReclaimPolicy::Retain));
        let b = desired_service(&sandbox(VolumeReclaimPolicy::Retain));
        assert!(unchanged(&a, &b));
        let mut other = sandbox(VolumeReclaimPolicy::Retain);
        other.metadata.uid = Some("uid-2".into());
        assert!(!unchanged(&a, &desired_service(&other)));
    }
}
