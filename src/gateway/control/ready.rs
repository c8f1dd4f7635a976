//! Answering once a Sandbox's runtime does: create and connect answer only then, since the
//! E2B SDKs do not wait, and their answer carries the runtime's token.

use http::{Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::{ControlError, Scope, api_error, error, json};
use crate::api::{RUNTIME_PORT, Sandbox};
use crate::gateway::State;
use crate::gateway::proxy::Body;
use crate::gateway::wake::Wait;

/// The envd version the runtime speaks (`sandman-runtime`'s `/health` says it too).
pub const ENVD_VERSION: &str = "0.5.7";

/// Whether the gateway's cache has already seen the Sandbox being waited on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Just created: the cache may not have it yet, so it is waited for.
    NotYet,
    /// Read from the cache a moment ago: if it is gone now, it was deleted.
    Already,
}

/// Waits until the runtime of `namespace/name` answers, waking it if it sleeps, then gives
/// E2B's answer for it, with its token read as the caller.
pub(super) async fn ready_answer(
    state: &State,
    scope: &Scope,
    name: &str,
    template: &str,
    seen: Seen,
) -> Response<Body> {
    let namespace = scope.namespace.as_str();
    if let Err(e) = runtime_answers(state, namespace, name, seen).await {
        return e.response();
    }
    let sandboxes: Api<Sandbox> = Api::namespaced(scope.client.clone(), namespace);
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
    let token = match Api::<Secret>::namespaced(scope.client.clone(), namespace)
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
async fn runtime_answers(
    state: &State,
    namespace: &str,
    name: &str,
    seen: Seen,
) -> Result<(), ControlError> {
    let key = (namespace.to_string(), name.to_string());
    let deadline = tokio::time::Instant::now() + state.options.hold;
    if seen == Seen::Already && state.waker.sandbox(&key).is_none() {
        return Err(ControlError::new(
            StatusCode::NOT_FOUND,
            format!("{namespace}/{name} not found: it was deleted"),
        ));
    }
    if !state.waker.appeared(&key, deadline).await {
        return Err(ControlError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{namespace}/{name} did not appear in time"),
        ));
    }
    let started = tokio::time::Instant::now();
    let addr = match state.waker.ready(&key, RUNTIME_PORT).await {
        Wait::Ready(addr) => addr,
        Wait::Gone => {
            return Err(ControlError::new(
                StatusCode::NOT_FOUND,
                format!("{namespace}/{name} not found: it was deleted"),
            ));
        }
        Wait::Overflow | Wait::TimedOut => {
            return Err(ControlError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{namespace}/{name} did not start in time"),
            ));
        }
    };
    let running_ms = started.elapsed().as_millis();
    if state
        .answered
        .wait(&state.upstream, &key, addr, deadline)
        .await
    {
        tracing::debug!(
            %namespace,
            %name,
            running_ms,
            answered_ms = started.elapsed().as_millis(),
            "the runtime answers"
        );
        return Ok(());
    }
    Err(ControlError::new(
        StatusCode::GATEWAY_TIMEOUT,
        format!("the runtime of {namespace}/{name} did not answer in time"),
    ))
}
