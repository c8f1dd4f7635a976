//! `POST /v2/sandboxes`: a `SandboxClaim` of the template `templateID` names in the caller's
//! namespace, made as the caller, answered once the claimed Sandbox's runtime answers.

use std::time::Duration;

use http::{Response, StatusCode};
use kube::api::{Api, PostParams};
use serde::Deserialize;

use super::lifecycle::{DEFAULT_TIMEOUT, ends_in};
use super::ready::{Seen, ready_answer};
use super::sandboxes::METADATA_ANNOTATION;
use super::{Scope, api_error, error};
use crate::api::SandboxClaim;
use crate::gateway::State;
use crate::gateway::proxy::Body;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<u64>,
    #[serde(default)]
    env_vars: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    auto_pause: bool,
}

pub(super) async fn create(state: &State, scope: &Scope, body: &[u8]) -> Response<Body> {
    let request: NewSandbox = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the request: {e}")),
    };
    // `namespace/template` is accepted for the caller's own namespace only; any other is a
    // template the caller cannot see.
    let template = match request.template_id.split_once('/') {
        Some((namespace, template)) if namespace == scope.namespace => template.to_string(),
        Some(_) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("template {} not found", request.template_id),
            );
        }
        None => request.template_id.clone(),
    };
    let namespace = scope.namespace.clone();
    let shutdown = ends_in(request.timeout.unwrap_or(DEFAULT_TIMEOUT));
    let metadata = match serde_json::to_string(&request.metadata) {
        Ok(metadata) => metadata,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("metadata: {e}")),
    };
    let env: Vec<serde_json::Value> = request
        .env_vars
        .iter()
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
        .collect();
    let claim: SandboxClaim = match serde_json::from_value(serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "SandboxClaim",
        "metadata": {
            "generateName": "e2b-",
            "annotations": { METADATA_ANNOTATION: metadata },
        },
        "spec": {
            "sandboxTemplateRef": { "name": template },
            // autoPause: at its timeout the Sandbox is suspended (a pause), not deleted.
            "lifecycle": {
                "shutdownTime": shutdown,
                "shutdownPolicy": if request.auto_pause { "Suspend" } else { "Delete" },
            },
            "env": env,
        },
    })) {
        Ok(claim) => claim,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the claim: {e}")),
    };
    let started = tokio::time::Instant::now();
    let claims: Api<SandboxClaim> = Api::namespaced(scope.client.clone(), &namespace);
    let made = match claims.create(&PostParams::default(), &claim).await {
        Ok(made) => made,
        Err(e) => return api_error("create the SandboxClaim", &e),
    };
    let claim_name = made.metadata.name.clone().unwrap_or_default();
    let sandbox = match bound_sandbox(state, &claims, &namespace, &made).await {
        Ok(sandbox) => sandbox,
        Err(response) => return response,
    };
    tracing::debug!(
        claim = %claim_name,
        %sandbox,
        bound_ms = started.elapsed().as_millis(),
        "the claim is bound"
    );
    let answer = ready_answer(state, scope, &sandbox, &template, Seen::NotYet).await;
    tracing::debug!(
        claim = %claim_name,
        status = answer.status().as_u16(),
        answered_ms = started.elapsed().as_millis(),
        "create answered"
    );
    answer
}

/// E2B's error for a claim its controller refused: a template that is not there (404), or
/// env or metadata its template does not allow (400), with the claim's own message.
fn refusal(claim: &SandboxClaim) -> Option<Response<Body>> {
    let ready = claim
        .status
        .as_ref()
        .and_then(|s| crate::api::conditions::find(&s.conditions, crate::api::conditions::READY))?;
    let status = match crate::api::ClaimReason::parse(&ready.reason)? {
        crate::api::ClaimReason::NotFound => StatusCode::NOT_FOUND,
        crate::api::ClaimReason::Refused => StatusCode::BAD_REQUEST,
        _ => return None,
    };
    Some(error(status, ready.message.clone()))
}

/// How soon after the claim is made its status is first read, and the most time between two
/// reads: the claim's status is the authority (and the only place a refusal shows), while the
/// gateway's cache usually shows the binding sooner.
const FIRST_READ: Duration = Duration::from_millis(50);
const MOST_BETWEEN_READS: Duration = Duration::from_millis(400);

/// The Sandbox the claim `made` gets bound to, within the gateway's hold time; the claim is
/// deleted if its controller refuses it. The binding is seen in the gateway's cache of
/// Sandboxes as soon as the watch brings it (a warm pool member is taken in tens of
/// milliseconds); the claim is read as the caller, at growing intervals, for refusals and for
/// a gateway that does not cache the namespace.
async fn bound_sandbox(
    state: &State,
    claims: &Api<SandboxClaim>,
    namespace: &str,
    made: &SandboxClaim,
) -> Result<String, Response<Body>> {
    let claim_name = made.metadata.name.clone().unwrap_or_default();
    let uid = made.metadata.uid.clone().unwrap_or_default();
    let now = tokio::time::Instant::now();
    let deadline = now + state.options.hold;
    let mut next_read = now + FIRST_READ;
    let mut between = FIRST_READ;
    let mut changes = state.waker.changes();
    let mut watching = true;
    loop {
        // Marked seen before the cache is read, so a change in between is not missed.
        changes.borrow_and_update();
        if let Some(name) = state.waker.claimed_by(namespace, &uid) {
            return Ok(name);
        }
        let now = tokio::time::Instant::now();
        if now >= next_read {
            if let Some(name) = read_binding(claims, &claim_name).await? {
                return Ok(name);
            }
            between = (between * 2).min(MOST_BETWEEN_READS);
            next_read = tokio::time::Instant::now() + between;
        }
        if now >= deadline {
            return Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("claim {namespace}/{claim_name} got no Sandbox in time"),
            ));
        }
        tokio::select! {
            changed = changes.changed(), if watching => watching = changed.is_ok(),
            () = tokio::time::sleep_until(next_read.min(deadline)) => {}
        }
    }
}

/// The Sandbox the claim's status names, if any yet; a refused claim is deleted, so nothing
/// the SDK could use is left behind, and its refusal is the answer.
async fn read_binding(
    claims: &Api<SandboxClaim>,
    claim_name: &str,
) -> Result<Option<String>, Response<Body>> {
    let claim = claims
        .get(claim_name)
        .await
        .map_err(|e| api_error("read the SandboxClaim", &e))?;
    if let Some(refused) = refusal(&claim) {
        let _ = claims
            .delete(claim_name, &kube::api::DeleteParams::default())
            .await;
        return Err(refused);
    }
    Ok(claim.status.and_then(|s| s.sandbox).map(|bound| bound.name))
}
