//! `POST /v2/sandboxes`: a `SandboxClaim` of the template `templateID` names in the caller's
//! namespace, made as the caller, answered once the claimed Sandbox's runtime answers.

use http::{Response, StatusCode};
use kube::api::{Api, PostParams};
use serde::Deserialize;

use super::lifecycle::{DEFAULT_TIMEOUT, ends_in};
use super::ready::ready_answer;
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
    let claims: Api<SandboxClaim> = Api::namespaced(scope.client.clone(), &namespace);
    let made = match claims.create(&PostParams::default(), &claim).await {
        Ok(made) => made,
        Err(e) => return api_error("create the SandboxClaim", &e),
    };
    let claim_name = made.metadata.name.clone().unwrap_or_default();
    let sandbox = match bound_sandbox(state, &claims, &namespace, &claim_name).await {
        Ok(sandbox) => sandbox,
        Err(response) => return response,
    };
    ready_answer(state, scope, &sandbox, &template).await
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

/// The Sandbox the claim `claim_name` gets bound to, within the gateway's hold time; the
/// claim is deleted if its controller refuses it.
async fn bound_sandbox(
    state: &State,
    claims: &Api<SandboxClaim>,
    namespace: &str,
    claim_name: &str,
) -> Result<String, Response<Body>> {
    let deadline = tokio::time::Instant::now() + state.options.hold;
    loop {
        match claims.get(claim_name).await {
            Ok(claim) => {
                if let Some(refused) = refusal(&claim) {
                    // Nothing the SDK could use is left behind.
                    let _ = claims
                        .delete(claim_name, &kube::api::DeleteParams::default())
                        .await;
                    return Err(refused);
                }
                if let Some(bound) = claim.status.and_then(|s| s.sandbox) {
                    return Ok(bound.name);
                }
            }
            Err(e) => return Err(api_error("read the SandboxClaim", &e)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("claim {namespace}/{claim_name} got no Sandbox in time"),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
