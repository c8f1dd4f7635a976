//! Sandboxes from templates, pure: the Sandbox a pool keeps or a claim gets, the labels that
//! tie it to its template, pool and claim, and which pool member a claim may take.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar as PodEnvVar, PersistentVolumeClaimTemplate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::conditions::{self, READY};
use crate::api::{
    EnvVar, EnvVarsInjectionPolicy, GatewaySpec, OperatingMode, Phase, PodMetadata,
    RESERVED_PREFIX, Sandbox, SandboxClaim, SandboxSpec, SandboxTemplate, SandboxTemplateSpec,
    SandboxWarmPool, VolumeClaimTemplatesPolicy,
};
use crate::controller::hash::content_hash;

pub use crate::api::{
    BLUEPRINT_HASH_LABEL, CLAIM_LABEL, CLAIM_NAME_LABEL, FROM_POOL_LABEL, POOL_LABEL,
    TEMPLATE_LABEL,
};

/// The hash of what a template's Sandboxes are made from. Metadata, the network profile and
/// the claim policies are not in it: changing them makes no member stale.
pub fn blueprint_hash(template: &SandboxTemplateSpec) -> String {
    let base = content_hash(&(
        &template.pod_template,
        &template.volume_claim_templates,
        template.service,
        &template.gateway,
        &template.isolation,
        &template.lifecycle,
        template.volume_reclaim_policy,
        template.update_strategy,
    ));
    // Hashed only when set, so templates without it keep the hashes their members carry.
    match &template.runtime {
        None => base,
        Some(runtime) => content_hash(&(base, runtime)),
    }
}

/// The Sandbox spec a template describes.
pub fn sandbox_spec(template: &SandboxTemplateSpec) -> SandboxSpec {
    SandboxSpec {
        pod_template: template.pod_template.clone(),
        volume_claim_templates: template.volume_claim_templates.clone(),
        service: template.service,
        operating_mode: OperatingMode::Running,
        // Each Sandbox its own token: one shared by a template's Sandboxes would let one
        // claim's holder into every other claim's Sandbox.
        gateway: template.gateway.clone().map(|gateway| GatewaySpec {
            token_sha256: None,
            generate_token: true,
            ..gateway
        }),
        isolation: template.isolation.clone(),
        runtime: template.runtime.clone(),
        lifecycle: template.lifecycle.clone(),
        volume_reclaim_policy: template.volume_reclaim_policy,
        update_strategy: template.update_strategy,
        ..SandboxSpec::default()
    }
}

fn controller_of<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let mut reference = owner.controller_owner_ref(&())?;
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

/// A new member of `pool`, made from `template`; the API server names it (`<pool>-xxxxx`).
pub fn pool_member(pool: &SandboxWarmPool, template: &SandboxTemplate) -> Sandbox {
    let mut labels = BTreeMap::from([
        (TEMPLATE_LABEL.to_string(), template.name_any()),
        (
            BLUEPRINT_HASH_LABEL.to_string(),
            blueprint_hash(&template.spec),
        ),
        (POOL_LABEL.to_string(), pool.name_any()),
    ]);
    labels.retain(|_, v| !v.is_empty());
    Sandbox {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", pool.name_any())),
            namespace: pool.namespace(),
            labels: Some(labels),
            owner_references: controller_of(pool).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: sandbox_spec(&template.spec),
        status: None,
    }
}

/// Why a claim cannot be served as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefusal {
    #[error(
        "the template does not allow claims to set environment variables (envVarsInjectionPolicy: Disallowed)"
    )]
    EnvDisallowed,
    #[error(
        "the template already sets {0}, and its envVarsInjectionPolicy is Allowed, not Overrides"
    )]
    EnvOverride(String),
    #[error("no container named {0} in the template")]
    NoSuchContainer(String),
    #[error("the environment variable {0} is reserved: {1}")]
    ReservedEnv(String, &'static str),
    #[error("pod metadata keys under sandman.dev/ are reserved: {0}")]
    ReservedKey(String),
    #[error(
        "the template does not allow claims to bring volume claim templates (volumeClaimTemplatesPolicy: Disallowed)"
    )]
    VolumesDisallowed,
    #[error(
        "the template already has volume claim template {0}, and its volumeClaimTemplatesPolicy is Allowed, not Overrides"
    )]
    VolumeOverride(String),
}

/// A Sandbox made for `claim` from `template` (a cold start): named after the claim, owned by
/// it, with the claim's environment and pod metadata.
pub fn claimed_sandbox(
    claim: &SandboxClaim,
    template: &SandboxTemplate,
) -> Result<Sandbox, ClaimRefusal> {
    let mut spec = sandbox_spec(&template.spec);
    apply_env(
        &mut spec,
        &claim.spec.env,
        template.spec.env_vars_injection_policy,
    )?;
    apply_pod_metadata(&mut spec, claim)?;
    apply_volume_claim_templates(
        &mut spec,
        &claim.spec.volume_claim_templates,
        template.spec.volume_claim_templates_policy,
    )?;
    let labels = BTreeMap::from([
        (TEMPLATE_LABEL.to_string(), template.name_any()),
        (
            BLUEPRINT_HASH_LABEL.to_string(),
            blueprint_hash(&template.spec),
        ),
        (CLAIM_LABEL.to_string(), claim.uid().unwrap_or_default()),
        (CLAIM_NAME_LABEL.to_string(), claim.name_any()),
    ]);
    Ok(Sandbox {
        metadata: ObjectMeta {
            name: Some(claim.name_any()),
            namespace: claim.namespace(),
            labels: Some(labels),
            owner_references: controller_of(claim).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

/// The claim's pod labels and annotations, refused under `sandman.dev/`.
pub fn apply_pod_metadata(
    spec: &mut SandboxSpec,
    claim: &SandboxClaim,
) -> Result<(), ClaimRefusal> {
    let Some(extra) = checked_pod_metadata(claim)? else {
        return Ok(());
    };
    let metadata = spec.pod_template.metadata.get_or_insert_default();
    metadata.labels.extend(extra.labels.clone());
    metadata.annotations.extend(extra.annotations.clone());
    Ok(())
}

/// The claim's pod labels and annotations, if any; refused under `sandman.dev/`.
pub fn checked_pod_metadata(claim: &SandboxClaim) -> Result<Option<&PodMetadata>, ClaimRefusal> {
    let Some(extra) = &claim.spec.additional_pod_metadata else {
        return Ok(None);
    };
    if let Some(key) = extra
        .labels
        .keys()
        .chain(extra.annotations.keys())
        .find(|k| k.starts_with(RESERVED_PREFIX))
    {
        return Err(ClaimRefusal::ReservedKey(key.clone()));
    }
    Ok(Some(extra))
}

/// The claim's environment, as far as `policy` allows.
/// Why a claim may not set the variable `name`, if it may not: `SANDMAN_*` is how the operator
/// speaks to a pod (the supervisor's token, what to restore). `PATH` and `LD_*` are the
/// agent's own: where the checkpoint supervisor runs, the operator gives a container's
/// variables to it only under a prefix, as the agent's (`controller/sandbox/supervisor.rs`).
fn reserved_env(name: &str) -> Option<&'static str> {
    name.starts_with("SANDMAN_")
        .then_some("SANDMAN_* is how sandman speaks to the pod")
}

pub fn apply_env(
    spec: &mut SandboxSpec,
    env: &[EnvVar],
    policy: EnvVarsInjectionPolicy,
) -> Result<(), ClaimRefusal> {
    if env.is_empty() {
        return Ok(());
    }
    if policy == EnvVarsInjectionPolicy::Disallowed {
        return Err(ClaimRefusal::EnvDisallowed);
    }
    if let Some((name, why)) = env
        .iter()
        .find_map(|v| reserved_env(&v.name).map(|why| (v.name.clone(), why)))
    {
        return Err(ClaimRefusal::ReservedEnv(name, why));
    }
    let containers = &mut spec.pod_template.spec.containers;
    for var in env {
        let container = match &var.container_name {
            Some(name) => containers
                .iter_mut()
                .find(|c| &c.name == name)
                .ok_or_else(|| ClaimRefusal::NoSuchContainer(name.clone()))?,
            None => containers
                .first_mut()
                .ok_or_else(|| ClaimRefusal::NoSuchContainer("(first)".into()))?,
        };
        let vars = container.env.get_or_insert_default();
        match vars.iter_mut().find(|v| v.name == var.name) {
            Some(_) if policy == EnvVarsInjectionPolicy::Allowed => {
                return Err(ClaimRefusal::EnvOverride(var.name.clone()));
            }
            Some(existing) => {
                *existing = PodEnvVar {
                    name: var.name.clone(),
                    value: Some(var.value.clone()),
                    value_from: None,
                }
            }
            None => vars.push(PodEnvVar {
                name: var.name.clone(),
                value: Some(var.value.clone()),
                value_from: None,
            }),
        }
    }
    Ok(())
}

/// The claim's volume claim templates, as far as `policy` allows.
pub fn apply_volume_claim_templates(
    spec: &mut SandboxSpec,
    wanted: &[PersistentVolumeClaimTemplate],
    policy: VolumeClaimTemplatesPolicy,
) -> Result<(), ClaimRefusal> {
    if wanted.is_empty() {
        return Ok(());
    }
    if policy == VolumeClaimTemplatesPolicy::Disallowed {
        return Err(ClaimRefusal::VolumesDisallowed);
    }
    for claim_template in wanted {
        let name_of = |t: &PersistentVolumeClaimTemplate| {
            t.metadata
                .as_ref()
                .and_then(|m| m.name.clone())
                .unwrap_or_default()
        };
        let name = name_of(claim_template);
        let existing = spec
            .volume_claim_templates
            .iter_mut()
            .find(|t| name_of(t) == name);
        match existing {
            Some(_) if policy == VolumeClaimTemplatesPolicy::Allowed => {
                return Err(ClaimRefusal::VolumeOverride(name));
            }
            Some(existing) => *existing = claim_template.clone(),
            None => spec.volume_claim_templates.push(claim_template.clone()),
        }
    }
    Ok(())
}

/// Whether `sandbox` is a member `pool` made: the pool's label is only a selector, which
/// anyone writing a Sandbox can set. Membership is the pool's controller owner reference, by
/// uid, with `blockOwnerDeletion` (which the `OwnerReferencesPermissionEnforcement` admission
/// plugin lets only those who may update the pool's finalizers set; SECURITY.md).
pub fn is_member_of(sandbox: &Sandbox, pool: &SandboxWarmPool) -> bool {
    let Some(uid) = pool.metadata.uid.as_deref() else {
        return false;
    };
    sandbox.labels().get(POOL_LABEL) == pool.metadata.name.as_ref()
        && sandbox.owner_references().iter().any(|o| {
            o.uid == uid
                && o.kind == "SandboxWarmPool"
                && o.controller == Some(true)
                && o.block_owner_deletion == Some(true)
        })
}

/// Whether a claim can take `sandbox` now: an unclaimed member that is Running and Ready, and
/// not going away. A member still starting is never handed out. Whose member it is is asked
/// apart ([`is_member_of`]).
pub fn is_takeable(sandbox: &Sandbox) -> bool {
    let labels = sandbox.labels();
    let status = sandbox.status.as_ref();
    sandbox.metadata.deletion_timestamp.is_none()
        && labels.contains_key(POOL_LABEL)
        && !labels.contains_key(CLAIM_LABEL)
        && sandbox.effective_mode() == OperatingMode::Running
        && status.and_then(|s| s.phase) == Some(Phase::Running)
        && status
            .and_then(|s| conditions::find(&s.conditions, READY))
            .is_some_and(|c| c.status == "True")
}

/// The member a claim takes: a takeable one of the current blueprint, else any takeable one;
/// the oldest first, so that members are used in the order they were made.
pub fn choose_member<'a>(
    members: &'a [Sandbox],
    pool: &SandboxWarmPool,
    current_hash: &str,
) -> Option<&'a Sandbox> {
    let mut takeable: Vec<&Sandbox> = members
        .iter()
        .filter(|s| is_member_of(s, pool) && is_takeable(s))
        .collect();
    takeable.sort_by_key(|s| {
        (
            s.labels().get(BLUEPRINT_HASH_LABEL).map(String::as_str) != Some(current_hash),
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            s.name_any(),
        )
    });
    takeable.first().copied()
}

/// Members whose blueprint is not the template's any more.
pub fn is_stale(sandbox: &Sandbox, current_hash: &str) -> bool {
    sandbox
        .labels()
        .get(BLUEPRINT_HASH_LABEL)
        .map(String::as_str)
        != Some(current_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SandboxStatus;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    fn template(policy: EnvVarsInjectionPolicy) -> SandboxTemplate {
        let mut template = SandboxTemplate::new(
            "python",
            SandboxTemplateSpec {
                env_vars_injection_policy: policy,
                ..Default::default()
            },
        );
        template.spec.pod_template.spec = PodSpec {
            containers: vec![Container {
                name: "agent".into(),
                env: Some(vec![PodEnvVar {
                    name: "MODE".into(),
                    value: Some("prod".into()),
                    value_from: None,
                }]),
                ..Default::default()
            }],
            ..Default::default()
        };
        template.metadata.namespace = Some("team".into());
        template.metadata.uid = Some("t-uid".into());
        template
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
            container_name: None,
        }
    }

    #[test]
    fn env_injection_follows_the_template_policy() {
        let mut spec = sandbox_spec(&template(EnvVarsInjectionPolicy::Disallowed).spec);
        assert_eq!(
            apply_env(
                &mut spec,
                &[var("X", "1")],
                EnvVarsInjectionPolicy::Disallowed
            ),
            Err(ClaimRefusal::EnvDisallowed)
        );
        assert_eq!(
            apply_env(
                &mut spec,
                &[var("MODE", "dev")],
                EnvVarsInjectionPolicy::Allowed
            ),
            Err(ClaimRefusal::EnvOverride("MODE".into()))
        );
        apply_env(
            &mut spec,
            &[var("MODE", "dev"), var("X", "1")],
            EnvVarsInjectionPolicy::Overrides,
        )
        .expect("overrides");
        let env = spec.pod_template.spec.containers[0]
            .env
            .clone()
            .unwrap_or_default();
        assert_eq!(env.len(), 2);
        assert_eq!(env[0].value.as_deref(), Some("dev"));
    }

    #[test]
    fn a_claim_cannot_speak_for_sandman() {
        let plain = sandbox_spec(&template(EnvVarsInjectionPolicy::Overrides).spec);
        let mut supervised = plain.clone();
        supervised.lifecycle = Some(crate::api::LifecycleSpec {
            checkpoint: Some(crate::api::CheckpointMode::OnSuspend),
            ..Default::default()
        });
        for (spec, name, refused) in [
            (&plain, "SANDMAN_RESTORE_IMAGE", true),
            (&plain, "SANDMAN_SUPERVISOR_TOKEN", true),
            (&plain, "PATH", false),
            (&plain, "LD_PRELOAD", false),
            // The agent's own, under the supervisor too: it gets them under a prefix only.
            (&supervised, "PATH", false),
            (&supervised, "LD_PRELOAD", false),
            (&supervised, "SANDMAN_SUSPENSIONS", true),
            (&supervised, "TASK", false),
        ] {
            let mut spec = spec.clone();
            let applied = apply_env(
                &mut spec,
                &[var(name, "x")],
                EnvVarsInjectionPolicy::Overrides,
            );
            assert_eq!(
                matches!(applied, Err(ClaimRefusal::ReservedEnv(ref n, _)) if n == name),
                refused,
                "{name}: {applied:?}"
            );
        }
    }

    fn volume(name: &str, storage: &str) -> PersistentVolumeClaimTemplate {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": { "resources": { "requests": { "storage": storage } } },
        }))
        .expect("volume claim template")
    }

    #[test]
    fn claim_volumes_follow_the_template_policy() {
        let mut spec = sandbox_spec(&template(EnvVarsInjectionPolicy::Disallowed).spec);
        spec.volume_claim_templates = vec![volume("data", "1Gi")];
        assert_eq!(
            apply_volume_claim_templates(
                &mut spec,
                &[volume("scratch", "1Gi")],
                VolumeClaimTemplatesPolicy::Disallowed
            ),
            Err(ClaimRefusal::VolumesDisallowed)
        );
        assert_eq!(
            apply_volume_claim_templates(
                &mut spec,
                &[volume("data", "5Gi")],
                VolumeClaimTemplatesPolicy::Allowed
            ),
            Err(ClaimRefusal::VolumeOverride("data".into()))
        );
        apply_volume_claim_templates(
            &mut spec,
            &[volume("scratch", "1Gi")],
            VolumeClaimTemplatesPolicy::Allowed,
        )
        .expect("a new name is allowed");
        apply_volume_claim_templates(
            &mut spec,
            &[volume("data", "5Gi")],
            VolumeClaimTemplatesPolicy::Overrides,
        )
        .expect("overrides");
        assert_eq!(spec.volume_claim_templates.len(), 2);
        assert_eq!(spec.volume_claim_templates[0], volume("data", "5Gi"));
    }

    fn pool() -> SandboxWarmPool {
        let mut pool = SandboxWarmPool::new("pool", Default::default());
        pool.metadata.uid = Some("pool-uid".into());
        pool
    }

    fn member(name: &str, age: i64, ready: bool, hash: &str) -> Sandbox {
        let mut s = Sandbox::new(name, Default::default());
        s.metadata.owner_references = controller_of(&pool()).map(|o| vec![o]);
        s.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_800_000_000 - age).expect("time"),
        ));
        s.metadata.labels = Some(BTreeMap::from([
            (POOL_LABEL.to_string(), "pool".to_string()),
            (BLUEPRINT_HASH_LABEL.to_string(), hash.to_string()),
        ]));
        s.status = Some(SandboxStatus {
            phase: Some(if ready {
                Phase::Running
            } else {
                Phase::Starting
            }),
            conditions: vec![Condition {
                type_: READY.into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "x".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::from_second(0).expect("time")),
            }],
            ..Default::default()
        });
        s
    }

    #[test]
    fn a_claim_takes_the_oldest_ready_member_of_the_current_blueprint() {
        let members = vec![
            member("starting", 50, false, "new"),
            member("old-blueprint", 40, true, "old"),
            member("young", 10, true, "new"),
            member("elder", 30, true, "new"),
        ];
        assert_eq!(
            choose_member(&members, &pool(), "new").map(|s| s.name_any()),
            Some("elder".into())
        );
        let mut claimed = members[3].clone();
        claimed
            .labels_mut()
            .insert(CLAIM_LABEL.into(), "someone".into());
        assert!(
            !is_takeable(&claimed),
            "a claimed member is never handed out twice"
        );
        assert_eq!(
            choose_member(&members[..2], &pool(), "new").map(|s| s.name_any()),
            Some("old-blueprint".into()),
            "an older blueprint is better than none"
        );
        assert!(
            choose_member(&members[..1], &pool(), "new").is_none(),
            "never one still starting"
        );
    }

    #[test]
    fn a_member_is_proven_by_the_pools_owner_reference_not_its_label() {
        let genuine = member("genuine", 30, true, "new");
        let mut forged = member("forged", 40, true, "new");
        forged.metadata.owner_references = None;
        let mut half_forged = member("half-forged", 50, true, "new");
        for owner in half_forged.metadata.owner_references.iter_mut().flatten() {
            owner.block_owner_deletion = None;
        }
        let mut other_pool = member("other", 60, true, "new");
        for owner in other_pool.metadata.owner_references.iter_mut().flatten() {
            owner.uid = "another-pool".into();
        }
        assert!(is_member_of(&genuine, &pool()));
        for fake in [&forged, &half_forged, &other_pool] {
            assert!(!is_member_of(fake, &pool()), "{}", fake.name_any());
        }
        let members = vec![forged, half_forged, other_pool, genuine];
        assert_eq!(
            choose_member(&members, &pool(), "new").map(|s| s.name_any()),
            Some("genuine".into()),
            "the older forged members are passed over"
        );
    }
}
