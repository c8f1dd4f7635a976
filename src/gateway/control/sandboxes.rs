//! A Sandbox by its E2B id: waiting until its runtime answers (create and connect answer only
//! then, since the SDKs do not wait), resuming, describing and killing it.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::{ControlError, api_error, error, json};
use crate::api::{Phase, RUNTIME_PORT, Sandbox, SandboxClaim};
use crate::gateway::State;
use crate::gateway::proxy::Body;
use crate::gateway::wake::Wait;

/// The envd version the runtime speaks (`sandman-runtime`'s `/health` says it too).
pub const ENVD_VERSION: &str = "0.5.7";
/// How often a Sandbox that is not in the gateway's cache yet, or a runtime that does not
/// answer yet, is looked at again.
const POLL: Duration = Duration::from_millis(100);

/// Waits until the runtime of `namespace/name` answers, waking it if it sleeps, then gives
/// E2B's answer for it, with its token read as the caller.
pub(super) async fn ready_answer(
    state: &State,
    client: &kube::Client,
    (namespace, name): (&str, &str),
    template: &str,
) -> Response<Body> {
    if let Err(e) = runtime_answers(state, namespace, name).await {
        return e.response();
    }
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), namespace);
    let sandbox = match sandboxes.get(name).await {
        Ok(sandbox) => sandbox,
        Err(e) => return api_error("get the Sandbox", &e),
    };
    let Some(secret) = sandbox
        .status
        .as_ref()
        .and_then(|s| s.gateway_token.as_ref())
    else {
        return error(
            StatusCode::CONFLICT,
            format!("{namespace}/{name} has no runtime token (spec.runtime)"),
        );
    };
    let token = match Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&secret.secret)
        .await
    {
        Ok(secret) => secret.data.and_then(|d| {
            d.get("token")
                .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        }),
        Err(e) => return api_error("read the Sandbox's token", &e),
    };
    json(
        StatusCode::CREATED,
        &serde_json::json!({
            "templateID": template,
            "sandboxID": crate::api::sandbox_id(namespace, name),
            "clientID": "sandman",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": token,
        }),
    )
}

/// Waits, within the gateway's hold time, until the Sandbox is in the cache, running (woken
/// if it sleeps), and its runtime answers `/health`.
async fn runtime_answers(state: &State, namespace: &str, name: &str) -> Result<(), ControlError> {
    let key = (namespace.to_string(), name.to_string());
    let deadline = tokio::time::Instant::now() + state.options.hold;
    while state.waker.sandbox(&key).is_none() {
        if tokio::time::Instant::now() >= deadline {
            return Err(ControlError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{namespace}/{name} did not appear in time"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    let addr = match state.waker.ready(&key, RUNTIME_PORT).await {
        Wait::Ready(addr) => addr,
        Wait::Gone => {
            return Err(ControlError::new(
                StatusCode::NOT_FOUND,
                format!("{namespace}/{name} is gone"),
            ));
        }
        Wait::Overflow | Wait::TimedOut => {
            return Err(ControlError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{namespace}/{name} did not start in time"),
            ));
        }
    };
    loop {
        let request = http::Request::get(format!("http://{addr}/health")).body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        );
        let healthy = match request {
            Ok(request) => {
                matches!(state.upstream.request(request).await, Ok(r) if r.status() == StatusCode::NO_CONTENT)
            }
            Err(_) => false,
        };
        if healthy {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ControlError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the runtime of {namespace}/{name} did not answer in time"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn find(state: &State, id: &str) -> Result<(String, String), ControlError> {
    state
        .ids
        .get(id)
        .ok_or_else(|| ControlError::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found")))
}

fn template_of(sandbox: &Sandbox) -> String {
    sandbox
        .labels()
        .get(crate::api::TEMPLATE_LABEL)
        .cloned()
        .unwrap_or_default()
}

/// `POST /v2/sandboxes/{id}/connect`: resumes it (with its memory where it checkpoints) and
/// answers once its runtime does.
pub(super) async fn connect(state: &State, client: kube::Client, id: &str) -> Response<Body> {
    let (namespace, name) = match find(state, id) {
        Ok(key) => key,
        Err(e) => return e.response(),
    };
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), &namespace);
    let patch = serde_json::json!({ "spec": { "operatingMode": "Running" } });
    let sandbox = match sandboxes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(sandbox) => sandbox,
        Err(e) => return api_error("resume the Sandbox", &e),
    };
    ready_answer(state, &client, (&namespace, &name), &template_of(&sandbox)).await
}

/// `GET /sandboxes/{id}`.
pub(super) async fn get(state: &State, client: kube::Client, id: &str) -> Response<Body> {
    let (namespace, name) = match find(state, id) {
        Ok(key) => key,
        Err(e) => return e.response(),
    };
    let sandbox = match Api::<Sandbox>::namespaced(client, &namespace)
        .get(&name)
        .await
    {
        Ok(sandbox) => sandbox,
        Err(e) => return api_error("get the Sandbox", &e),
    };
    let status = sandbox.status.clone().unwrap_or_default();
    let state_name = match status.phase {
        Some(Phase::Suspended) => "paused",
        _ => "running",
    };
    let started = sandbox
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let ends = sandbox
        .spec
        .shutdown_time
        .as_ref()
        .map_or_else(|| started.clone(), |t| t.0.to_string());
    json(
        StatusCode::OK,
        &serde_json::json!({
            "templateID": template_of(&sandbox),
            "sandboxID": id,
            "clientID": "sandman",
            "startedAt": started,
            "endAt": ends,
            "envdVersion": ENVD_VERSION,
            // Not tracked per Sandbox by sandman; E2B's SDKs require the fields.
            "cpuCount": 0,
            "memoryMB": 0,
            "diskSizeMB": 0,
            "state": state_name,
            "metadata": {},
        }),
    )
}

/// `DELETE /sandboxes/{id}`: the claim that holds it goes, and the Sandbox with it; a
/// Sandbox without a claim is deleted itself.
pub(super) async fn kill(state: &State, client: kube::Client, id: &str) -> Response<Body> {
    let (namespace, name) = match find(state, id) {
        Ok(key) => key,
        Err(e) => return e.response(),
    };
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), &namespace);
    let sandbox = match sandboxes.get(&name).await {
        Ok(sandbox) => sandbox,
        Err(e) => return api_error("get the Sandbox", &e),
    };
    let claim = sandbox
        .owner_references()
        .iter()
        .find(|o| o.kind == "SandboxClaim" && o.controller == Some(true))
        .map(|o| o.name.clone());
    let deleted = match &claim {
        Some(claim) => Api::<SandboxClaim>::namespaced(client, &namespace)
            .delete(claim, &DeleteParams::default())
            .await
            .map(|_| ()),
        None => sandboxes
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    };
    match deleted {
        Ok(()) => {
            let mut response = json(StatusCode::NO_CONTENT, &serde_json::Value::Null);
            *response.body_mut() = Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed();
            response
        }
        Err(e) => api_error("delete", &e),
    }
}
