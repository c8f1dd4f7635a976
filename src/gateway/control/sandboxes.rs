//! A Sandbox by its E2B id, and how E2B describes one: found only in the caller's namespace,
//! its state, times and metadata read from it and from the claim that holds it.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::ready::ENVD_VERSION;
use super::{ControlError, Scope, api_error, error, json};
use crate::api::{Sandbox, SandboxClaim};
use crate::gateway::State;
use crate::gateway::proxy::Body;

/// On a claim made through the control API: the `metadata` it was created with (JSON). An
/// annotation, since E2B's metadata values need not be label values.
pub const METADATA_ANNOTATION: &str = "e2b.sandman.dev/metadata";

/// The Sandbox `id` names, when it is in the caller's namespace. One in another namespace is
/// not found, word for word as one that does not exist.
pub(super) fn find(state: &State, scope: &Scope, id: &str) -> Result<String, ControlError> {
    let not_found = || ControlError::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found"));
    let key = state.ids.get(id).ok_or_else(not_found)?;
    if key.0 != scope.namespace || state.waker.sandbox(&key).is_none() {
        return Err(not_found());
    }
    Ok(key.1)
}

/// The claim that holds `sandbox`, by name.
pub(super) fn claim_of(sandbox: &Sandbox) -> Option<String> {
    sandbox
        .owner_references()
        .iter()
        .find(|o| o.kind == "SandboxClaim" && o.controller == Some(true))
        .map(|o| o.name.clone())
}

pub(super) fn template_of(sandbox: &Sandbox) -> String {
    sandbox
        .labels()
        .get(crate::api::TEMPLATE_LABEL)
        .cloned()
        .unwrap_or_default()
}

/// E2B's state: `paused` from the moment a suspend is asked for until a resume is.
pub(super) fn state_of(sandbox: &Sandbox) -> &'static str {
    let asked = sandbox.spec.operating_mode == crate::api::OperatingMode::Suspended;
    let phase = sandbox.status.as_ref().and_then(|s| s.phase);
    if asked || phase.is_some_and(|p| p.suspended_side()) {
        "paused"
    } else {
        "running"
    }
}

/// The metadata a claim was created with; none when it has none or it is not JSON.
pub(super) fn metadata_of(claim: Option<&SandboxClaim>) -> BTreeMap<String, String> {
    claim
        .and_then(|c| c.annotations().get(METADATA_ANNOTATION))
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default()
}

/// E2B's description of a Sandbox (`SandboxDetail` and `ListedSandbox` share these fields).
pub(super) fn describe(sandbox: &Sandbox, claim: Option<&SandboxClaim>) -> serde_json::Value {
    let namespace = sandbox.namespace().unwrap_or_default();
    let started = sandbox
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    // The claim's shutdown time is when the SDK's sandbox ends; a Sandbox's own, else.
    let ends = claim
        .and_then(|c| c.spec.lifecycle.as_ref())
        .and_then(|l| l.shutdown_time.as_ref())
        .or(sandbox.spec.shutdown_time.as_ref())
        .map_or_else(|| started.clone(), |t| t.0.to_string());
    serde_json::json!({
        "templateID": template_of(sandbox),
        "sandboxID": crate::api::sandbox_id(&namespace, &sandbox.name_any()),
        "clientID": "sandman",
        "startedAt": started,
        "endAt": ends,
        "envdVersion": ENVD_VERSION,
        // Not tracked per Sandbox by sandman; E2B's SDKs require the fields.
        "cpuCount": 0,
        "memoryMB": 0,
        "diskSizeMB": 0,
        "state": state_of(sandbox),
        "metadata": metadata_of(claim),
    })
}

/// The Sandbox `id` names and the claim that holds it, read as the caller.
pub(super) async fn read(
    state: &State,
    scope: &Scope,
    id: &str,
) -> Result<(Sandbox, Option<SandboxClaim>), Response<Body>> {
    let name = find(state, scope, id).map_err(|e| e.response())?;
    // A killed sandbox is not found, as in E2B, from the moment the kill is answered: its
    // claim goes at once, but the Sandbox lingers until the garbage collector or its
    // finalizer is done, and a resume of it then would only wait for it to vanish.
    let not_found = || error(StatusCode::NOT_FOUND, format!("sandbox {id} not found"));
    let sandbox = match Api::<Sandbox>::namespaced(scope.client.clone(), &scope.namespace)
        .get(&name)
        .await
    {
        Ok(sandbox) if sandbox.metadata.deletion_timestamp.is_none() => sandbox,
        Ok(_) => return Err(not_found()),
        Err(kube::Error::Api(status)) if status.code == 404 => return Err(not_found()),
        Err(e) => return Err(api_error("get the Sandbox", &e)),
    };
    let claim = match claim_of(&sandbox) {
        Some(claim) => {
            match Api::<SandboxClaim>::namespaced(scope.client.clone(), &scope.namespace)
                .get(&claim)
                .await
            {
                Ok(claim) if claim.metadata.deletion_timestamp.is_none() => Some(claim),
                Ok(_) => return Err(not_found()),
                Err(kube::Error::Api(status)) if status.code == 404 => return Err(not_found()),
                Err(e) => return Err(api_error("get the SandboxClaim", &e)),
            }
        }
        None => None,
    };
    Ok((sandbox, claim))
}

/// `GET /sandboxes/{id}`.
pub(super) async fn get(state: &State, scope: &Scope, id: &str) -> Response<Body> {
    match read(state, scope, id).await {
        Ok((sandbox, claim)) => json(StatusCode::OK, &describe(&sandbox, claim.as_ref())),
        Err(response) => response,
    }
}

/// `GET /sandboxes/{id}/metrics`: sandman keeps no per-Sandbox CPU or memory series, so the
/// answer is E2B's empty list, for a Sandbox the caller may see.
pub(super) async fn metrics(state: &State, scope: &Scope, id: &str) -> Response<Body> {
    match find(state, scope, id) {
        Ok(_) => json(StatusCode::OK, &serde_json::json!([])),
        Err(e) => e.response(),
    }
}
