//! `POST /v2/sandboxes`: a `SandboxClaim` of the template `templateID` names, made as the
//! caller, answered once the claimed Sandbox's runtime answers.

use http::{Response, StatusCode};
use kube::api::{Api, PostParams};
use serde::Deserialize;

use super::sandboxes::ready_answer;
use super::{Control, api_error, error};
use crate::api::SandboxClaim;
use crate::gateway::State;
use crate::gateway::proxy::Body;

/// The longest `timeout` E2B allows for a sandbox (24 hours), and its default (300 s).
const MAX_TIMEOUT: u64 = 24 * 3600;
const DEFAULT_TIMEOUT: u64 = 300;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<u64>,
    #[serde(default)]
    env_vars: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    auto_pause: bool,
}

pub(super) async fn create(
    state: &State,
    control: &Control,
    client: kube::Client,
    body: &[u8],
) -> Response<Body> {
    let request: NewSandbox = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the request: {e}")),
    };
    if request.auto_pause {
        return error(
            StatusCode::BAD_REQUEST,
            "autoPause is not served by sandman yet; leave it unset",
        );
    }
    // `team/template` names the namespace; a bare name is in the gateway's control namespace.
    let (namespace, template) = match request.template_id.split_once('/') {
        Some((namespace, template)) => (namespace.to_string(), template.to_string()),
        None => (control.namespace.clone(), request.template_id.clone()),
    };
    let timeout = request
        .timeout
        .unwrap_or(DEFAULT_TIMEOUT)
        .clamp(1, MAX_TIMEOUT);
    let shutdown = k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_secs(i64::try_from(timeout).unwrap_or(0));
    let env: Vec<serde_json::Value> = request
        .env_vars
        .iter()
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
        .collect();
    let claim: SandboxClaim = match serde_json::from_value(serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "SandboxClaim",
        "metadata": { "generateName": "e2b-" },
        "spec": {
            "sandboxTemplateRef": { "name": template },
            "lifecycle": { "shutdownTime": shutdown.to_string(), "shutdownPolicy": "Delete" },
            "env": env,
        },
    })) {
        Ok(claim) => claim,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the claim: {e}")),
    };
    let claims: Api<SandboxClaim> = Api::namespaced(client.clone(), &namespace);
    let made = match claims.create(&PostParams::default(), &claim).await {
        Ok(made) => made,
        Err(e) => return api_error("create the SandboxClaim", &e),
    };
    let claim_name = made.metadata.name.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + state.options.hold;
    let sandbox = loop {
        match claims.get(&claim_name).await {
            Ok(claim) => {
                if let Some(bound) = claim.status.and_then(|s| s.sandbox) {
                    break bound.name;
                }
            }
            Err(e) => return api_error("read the SandboxClaim", &e),
        }
        if tokio::time::Instant::now() >= deadline {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("claim {namespace}/{claim_name} got no Sandbox in time"),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    ready_answer(state, &client, (&namespace, &sandbox), &request.template_id).await
}
