//! Checkpoints around suspend and resume: which suspension asks for one (the spec, or the
//! lifecycle decision that suspended, recorded with its override), what the phase machine's
//! checkpoint step takes, what the next pod restores, and reading back whether it did.
//!
//! Nothing here decides a phase: the phase machine plans the checkpoint step, the reconcile
//! carries it out through [`take`], and [`record_taken`] and [`record_start`] turn what came
//! back into status and Events for the next plan to read.
//!
//! A checkpoint never holds a suspend up for good: one that fails or times out is recorded and
//! the suspend goes on without it, with the file system kept. Only the checkpoint taken for
//! the suspension a resume ends is ever restored, so memory never goes back behind files.

use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    CheckpointMode, CheckpointOutcome, CheckpointStatus, OperatingMode, Sandbox, SandboxStatus,
};
use crate::checkpoint::client::SupervisorClient;
use crate::checkpoint::signed::restore_signature;
use crate::checkpoint::{
    CheckpointRecord, CheckpointRequest, RESTORE_IMAGE_ENV, RESTORE_SHA256_ENV,
    RESTORE_SIGNATURE_ENV, SUPERVISOR_PORT, StartKind, StartReport,
};
use crate::controller::sandbox::events::{Reason, Transition};
use crate::policy::limits::parse_duration;

/// How long a checkpoint may take unless `spec.lifecycle.checkpointTimeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `spec.lifecycle.checkpointTimeout` can be (the CRD's rule: at most 1h). A
/// supervisor is started with this ceiling, not with the Sandbox's own timeout: the timeout
/// may change while the pod runs, and every checkpoint request, signed by the operator,
/// carries the one that holds then.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// How many images the volume keeps unless `spec.lifecycle.keepCheckpoints` says otherwise.
pub const DEFAULT_KEEP: u32 = 2;
/// How soon to ask a restoring pod's supervisor again when it did not answer.
pub const REPORT_RETRY: Duration = Duration::from_secs(2);
/// How long after the resume a pod's supervisor may stay silent before the restore counts as
/// failed (a pod that runs no supervisor would otherwise be asked forever).
const REPORT_DEADLINE: Duration = Duration::from_secs(120);

/// A checkpoint to take before the pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod_ip: String,
    pub request: CheckpointRequest,
    pub timeout: Duration,
}

/// What became of a checkpoint the reconcile took.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    Checkpointed(CheckpointRecord),
    /// It could not be taken, for this reason (with how long it was tried).
    Failed(String),
}

/// Whether this suspension keeps the agent's memory: what the one who suspended said when it
/// said anything (a lifecycle policy's `checkpoint`, recorded in the mode override), the
/// Sandbox's spec otherwise.
pub fn wanted(sandbox: &Sandbox) -> bool {
    let decided = sandbox
        .status
        .as_ref()
        .and_then(|s| s.mode_override.as_ref())
        .filter(|o| o.mode == OperatingMode::Suspended)
        .and_then(|o| o.checkpoint);
    decided.unwrap_or_else(|| {
        sandbox.spec.lifecycle.as_ref().and_then(|l| l.checkpoint)
            == Some(CheckpointMode::OnSuspend)
    })
}

/// Whether the Sandbox's pods run a supervisor the operator speaks to: its spec says so
/// (`OnSuspend`, `WhenDecided`), a lifecycle decision asks this suspension for a checkpoint,
/// or a checkpoint is recorded for it. A pod made before any of these has no token, and its
/// supervisor refuses the checkpoint: the suspend goes on without one.
pub fn supervised(sandbox: &Sandbox) -> bool {
    CheckpointMode::supervised(sandbox.spec.lifecycle.as_ref().and_then(|l| l.checkpoint))
        || wanted(sandbox)
        || sandbox
            .status
            .as_ref()
            .is_some_and(|s| s.checkpoint.is_some())
}

/// The checkpoint this suspension takes of `pod`, if one is wanted, not tried yet for this
/// suspension, and there is a running agent to take it from.
pub fn target(sandbox: &Sandbox, pod: &Pod, suspension: u64) -> Option<Target> {
    if !wanted(sandbox) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if tried(sandbox, suspension) || status.phase.as_deref() != Some("Running") {
        return None;
    }
    let pod_ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    let lifecycle = sandbox.spec.lifecycle.as_ref();
    let timeout = lifecycle
        .and_then(|l| l.checkpoint_timeout.as_deref())
        .and_then(|t| parse_duration(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    Some(Target {
        pod_ip,
        request: CheckpointRequest {
            sandbox_uid: sandbox.uid().unwrap_or_default(),
            pod: pod.name_any(),
            suspension,
            keep: lifecycle
                .and_then(|l| l.keep_checkpoints)
                .unwrap_or(DEFAULT_KEEP)
                .clamp(1, 16),
            timeout_seconds: Some(timeout.as_secs().max(1)),
        },
        timeout,
    })
}

/// A checkpoint was tried for this suspension, whatever became of it.
fn tried(sandbox: &Sandbox, suspension: u64) -> bool {
    sandbox
        .status
        .as_ref()
        .and_then(|s| s.checkpoint.as_ref())
        .is_some_and(|c| c.suspension == suspension)
}

/// This suspension's checkpoint was taken: runsc has stopped the agent it checkpointed, so its
/// pod is spent and only a new pod (which restores it) runs the agent again.
pub fn taken_for_current(sandbox: &Sandbox) -> bool {
    let Some(status) = sandbox.status.as_ref() else {
        return false;
    };
    status.checkpoint.as_ref().is_some_and(|c| {
        c.outcome == CheckpointOutcome::Checkpointed && c.suspension == status.suspensions
    })
}

/// The checkpoint a new pod should restore: the one taken for the suspension that is ending,
/// not restored yet.
pub fn pending_restore(sandbox: &Sandbox) -> Option<&CheckpointStatus> {
    let status = sandbox.status.as_ref()?;
    status.checkpoint.as_ref().filter(|c| {
        c.outcome == CheckpointOutcome::Checkpointed
            && c.suspension == status.suspensions
            && !c.image.is_empty()
    })
}

fn var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

/// What the pod's supervisor needs to restore: the image and its sha256. The operator's
/// signature over them is added by [`sign_restore`] when the pod is made.
pub fn restore_env(sandbox: &Sandbox) -> Vec<EnvVar> {
    let Some(checkpoint) = pending_restore(sandbox) else {
        return Vec::new();
    };
    vec![
        var(RESTORE_IMAGE_ENV, checkpoint.image.clone()),
        var(RESTORE_SHA256_ENV, checkpoint.sha256.clone()),
    ]
}

/// Signs the pending restore in `pod` with the Sandbox's `token`, for every container that
/// was told what to restore. Without it, the supervisor restores nothing.
pub fn sign_restore(pod: &mut Pod, sandbox: &Sandbox, token: &str) {
    let Some(checkpoint) = pending_restore(sandbox) else {
        return;
    };
    let signature = restore_signature(
        token,
        &sandbox.uid().unwrap_or_default(),
        &checkpoint.image,
        &checkpoint.sha256,
    );
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    for container in &mut spec.containers {
        let env = container.env.get_or_insert_with(Vec::new);
        if env.iter().any(|e| e.name == RESTORE_IMAGE_ENV) {
            env.retain(|e| e.name != RESTORE_SIGNATURE_ENV);
            env.push(var(RESTORE_SIGNATURE_ENV, signature.clone()));
        }
    }
}

/// The pod annotation that names the image a pod was made to restore (the pod cache keeps
/// annotations, not containers' environments).
pub const RESTORE_ANNOTATION: &str = "sandman.dev/restore-image";

/// The image a pod was made to restore.
fn restoring(pod: &Pod) -> Option<&str> {
    pod.annotations()
        .get(RESTORE_ANNOTATION)
        .map(String::as_str)
}

/// A checkpoint that could not even be asked for (there is no token to sign it with).
pub fn not_asked(why: &str) -> Taken {
    Taken::Failed(format!(
        "{why}; suspending without a checkpoint: the volume is kept and the next resume starts afresh"
    ))
}

/// Asks the pod's supervisor for the checkpoint, signed with the Sandbox's `token`. Failure is
/// an outcome too: the suspend goes on either way.
pub async fn take(supervisors: &SupervisorClient, token: &str, target: &Target) -> Taken {
    let began = std::time::Instant::now();
    match supervisors
        .checkpoint(
            (&target.pod_ip, SUPERVISOR_PORT),
            token,
            &target.request,
            target.timeout,
        )
        .await
    {
        Ok(record) => Taken::Checkpointed(record),
        Err(error) => Taken::Failed(format!(
            "{error} (after {} ms); suspending without it: the volume is kept and the next resume starts afresh",
            began.elapsed().as_millis()
        )),
    }
}

/// Records what [`take`] brought back for `target` in the status, and the Event that says so.
pub fn record_taken(status: &mut SandboxStatus, target: &Target, taken: Taken) -> Transition {
    match taken {
        Taken::Checkpointed(record) => {
            let note = format!(
                "checkpoint {} of pod {}: {} bytes in {} ms, sha256 {}",
                record.image, record.pod, record.size_bytes, record.took_ms, record.sha256
            );
            status.checkpoint = Some(CheckpointStatus {
                outcome: CheckpointOutcome::Checkpointed,
                suspension: record.suspension,
                image: record.image,
                sha256: record.sha256,
                size_bytes: Some(record.size_bytes),
                taken_at: Some(Time(record.taken_at)),
                pod: record.pod,
                duration_ms: Some(record.took_ms),
                restored_at: None,
                message: None,
            });
            Transition::new(Reason::Checkpointed, note, false)
        }
        Taken::Failed(message) => {
            let previous = status.checkpoint.clone().unwrap_or_default();
            status.checkpoint = Some(CheckpointStatus {
                outcome: CheckpointOutcome::Failed,
                suspension: target.request.suspension,
                message: Some(message.clone()),
                ..previous
            });
            Transition::new(Reason::CheckpointFailed, message, true)
        }
    }
}

/// How a pod made to restore started, as its supervisor said, or why it said nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum StartHeard {
    Report(StartReport),
    Silent(String),
}

/// The IP of the supervisor to ask how the agent started: when `pod` was made to restore the
/// pending checkpoint and is Ready. `None` when there is nothing to ask.
pub fn start_to_hear(sandbox: &Sandbox, pod: Option<&Pod>) -> Option<String> {
    let pending = pending_restore(sandbox)?;
    let pod = pod?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready || restoring(pod) != Some(pending.image.as_str()) {
        return None;
    }
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

/// Asks the supervisor at `ip` how the agent started, signed with the Sandbox's `token`.
pub async fn hear_start(supervisors: &SupervisorClient, ip: &str, token: &str) -> StartHeard {
    match supervisors.start_report((ip, SUPERVISOR_PORT), token).await {
        Ok(report) => StartHeard::Report(report),
        Err(error) => StartHeard::Silent(error.to_string()),
    }
}

/// Records how the restoring pod `pod_name` started. `Err(retry)` while its supervisor is
/// silent and may still answer: nothing is recorded and the plan asks again after `retry`.
pub fn record_start(
    status: &mut SandboxStatus,
    pending: &CheckpointStatus,
    pod_name: &str,
    heard: StartHeard,
    now: Timestamp,
) -> Result<Transition, Duration> {
    let report = match heard {
        StartHeard::Report(report) => report,
        StartHeard::Silent(error) => {
            let silent_for = status
                .resumed_at
                .as_ref()
                .map(|t| now.duration_since(t.0))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default();
            if silent_for < REPORT_DEADLINE {
                tracing::debug!(%error, "no start report yet");
                return Err(REPORT_RETRY);
            }
            StartReport {
                start: StartKind::ColdStart,
                image: Some(pending.image.clone()),
                reason: Some(format!(
                    "the pod's supervisor did not say how it started within {}s of the resume ({error})",
                    REPORT_DEADLINE.as_secs()
                )),
                at: now,
                took_ms: 0,
            }
        }
    };
    let mut checkpoint = pending.clone();
    let transition = match report.start {
        StartKind::Restored => {
            checkpoint.outcome = CheckpointOutcome::Restored;
            checkpoint.restored_at = Some(Time(report.at));
            Transition::new(
                Reason::Restored,
                format!(
                    "pod {pod_name} restored checkpoint {} in {} ms",
                    checkpoint.image, report.took_ms
                ),
                false,
            )
        }
        StartKind::ColdStart => {
            let reason = report
                .reason
                .unwrap_or_else(|| "the supervisor did not restore it".into());
            checkpoint.outcome = CheckpointOutcome::RestoreFailed;
            checkpoint.message = Some(reason.clone());
            Transition::new(
                Reason::RestoreFailed,
                format!(
                    "checkpoint {} not restored ({reason}); the agent started afresh with the same volumes",
                    checkpoint.image
                ),
                true,
            )
        }
    };
    status.checkpoint = Some(checkpoint);
    Ok(transition)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;

    use super::*;
    use crate::api::{LifecycleSpec, SandboxStatus};

    fn sandbox(mode: Option<CheckpointMode>, checkpoint: Option<CheckpointStatus>) -> Sandbox {
        let mut sandbox: Sandbox = serde_json::from_value(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": { "name": "s", "namespace": "n", "uid": "uid-1" },
            "spec": { "podTemplate": { "spec": { "containers": [{ "name": "a", "image": "i" }] } } },
        }))
        .expect("sandbox");
        sandbox.spec.lifecycle = Some(LifecycleSpec {
            checkpoint: mode,
            ..LifecycleSpec::default()
        });
        sandbox.status = Some(SandboxStatus {
            suspensions: 3,
            checkpoint,
            ..SandboxStatus::default()
        });
        sandbox
    }

    fn pod(phase: &str) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: Some("127.1.0.9".into()),
                ..Default::default()
            }),
        }
    }

    fn taken(outcome: CheckpointOutcome, suspension: u64) -> CheckpointStatus {
        CheckpointStatus {
            outcome,
            suspension,
            image: "000000000000001-s3".into(),
            sha256: "ab".repeat(32),
            ..CheckpointStatus::default()
        }
    }

    #[test]
    fn a_checkpoint_is_taken_once_per_suspension_of_a_running_agent() {
        let on = sandbox(Some(CheckpointMode::OnSuspend), None);
        let target = target(&on, &pod("Running"), 3).expect("a target");
        assert_eq!(target.pod_ip, "127.1.0.9");
        assert_eq!(target.request.sandbox_uid, "uid-1");
        assert_eq!(target.request.keep, DEFAULT_KEEP);
        assert_eq!(target.timeout, DEFAULT_TIMEOUT);
        assert_eq!(target.request.suspension, 3);
        // Not asked for, no running agent, or tried already for this suspension: none.
        let off = sandbox(Some(CheckpointMode::Never), None);
        assert!(super::target(&off, &pod("Running"), 3).is_none());
        assert!(super::target(&on, &pod("Pending"), 3).is_none());
        let failed = sandbox(
            Some(CheckpointMode::OnSuspend),
            Some(taken(CheckpointOutcome::Failed, 3)),
        );
        assert!(super::target(&failed, &pod("Running"), 3).is_none());
        assert!(super::target(&failed, &pod("Running"), 4).is_some());
    }

    #[test]
    fn only_the_checkpoint_of_the_ending_suspension_is_restored() {
        let current = sandbox(None, Some(taken(CheckpointOutcome::Checkpointed, 3)));
        let env = restore_env(&current);
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [RESTORE_IMAGE_ENV, RESTORE_SHA256_ENV]);
        // An older suspension's image is behind the files; a restored or failed one is spent.
        for stale in [
            taken(CheckpointOutcome::Checkpointed, 2),
            taken(CheckpointOutcome::Restored, 3),
            taken(CheckpointOutcome::Failed, 3),
        ] {
            assert!(restore_env(&sandbox(None, Some(stale))).is_empty());
        }
    }

    #[test]
    fn the_supervisor_gets_the_operators_word_and_a_template_cannot_forge_it() {
        use crate::checkpoint::signed::TOKEN_ENV;
        use crate::checkpoint::{SANDBOX_UID_ENV, SUSPENSIONS_ENV};
        let mut current = sandbox(
            Some(CheckpointMode::OnSuspend),
            Some(taken(CheckpointOutcome::Checkpointed, 3)),
        );
        // The tenant's template sets every name the operator speaks in.
        current.spec.pod_template.spec.containers[0].env = Some(
            [
                TOKEN_ENV,
                SANDBOX_UID_ENV,
                SUSPENSIONS_ENV,
                RESTORE_IMAGE_ENV,
                RESTORE_SIGNATURE_ENV,
            ]
            .iter()
            .map(|n| var(n, "forged".into()))
            .collect(),
        );
        let decisions = crate::controller::sandbox::decisions::Decisions {
            supervisor: Some(crate::controller::sandbox::supervisor::Injection {
                image: "registry.local/supervisor@sha256:ab".into(),
                secret: "sandman-token-s".into(),
                images: "/workspace/.sandman/checkpoints".into(),
            }),
            ..Default::default()
        };
        let mut pod = crate::controller::sandbox::children::desired_pod(&current, &decisions);
        let token = "t".repeat(64);
        sign_restore(&mut pod, &current, &token);
        let env = pod.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .expect("env");
        let value = |name: &str| {
            let found: Vec<_> = env.iter().filter(|e| e.name == name).collect();
            assert_eq!(found.len(), 1, "{name} set once");
            found[0].clone()
        };
        let from_secret = value(TOKEN_ENV)
            .value_from
            .and_then(|v| v.secret_key_ref)
            .expect("the token comes from the Secret");
        assert_eq!(from_secret.name, "sandman-token-s");
        assert_eq!(value(SANDBOX_UID_ENV).value.as_deref(), Some("uid-1"));
        assert_eq!(value(SUSPENSIONS_ENV).value.as_deref(), Some("3"));
        let image = value(RESTORE_IMAGE_ENV).value.expect("image");
        let sha = value(RESTORE_SHA256_ENV).value.expect("sha256");
        let signature = value(RESTORE_SIGNATURE_ENV).value.expect("signature");
        assert_eq!(
            crate::checkpoint::signed::check_restore(&token, "uid-1", &image, &sha, &signature),
            Ok(())
        );
    }
}
