//! What the SDKs do to a Sandbox over its life: resume it (`connect`), pause it, move its end
//! (`set_timeout`) and kill it. Each is a patch or a delete made as the caller.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde::Deserialize;

use super::ready::{Seen, ready_answer};
use super::sandboxes::{claim_of, find, read, state_of, template_of};
use super::{ControlError, Scope, api_error, error};
use crate::api::{CheckpointMode, Sandbox, SandboxClaim};
use crate::gateway::State;
use crate::gateway::proxy::Body;

/// The longest `timeout` E2B allows for a sandbox (24 hours), and its default (300 s).
pub(super) const MAX_TIMEOUT: u64 = 24 * 3600;
pub(super) const DEFAULT_TIMEOUT: u64 = 300;
const POLL: Duration = Duration::from_millis(100);

#[derive(Deserialize, Default)]
struct NewTimeout {
    timeout: Option<u64>,
}

/// When a sandbox given `timeout` seconds from now ends, as an API time.
pub(super) fn ends_in(timeout: u64) -> Time {
    let seconds = i64::try_from(timeout.clamp(1, MAX_TIMEOUT)).unwrap_or(0);
    Time(Timestamp::now() + SignedDuration::from_secs(seconds))
}

fn parse_timeout(body: &[u8]) -> Result<Option<u64>, ControlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<NewTimeout>(body)
        .map(|t| t.timeout)
        .map_err(|e| ControlError::new(StatusCode::BAD_REQUEST, format!("the request: {e}")))
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Moves the end of `sandbox` to `end`: its claim's `shutdownTime`, or its own when no claim
/// holds it.
async fn set_end(scope: &Scope, sandbox: &Sandbox, end: Time) -> Result<(), Response<Body>> {
    let name = kube::ResourceExt::name_any(sandbox);
    let result = match claim_of(sandbox) {
        Some(claim) => Api::<SandboxClaim>::namespaced(scope.client.clone(), &scope.namespace)
            .patch(
                &claim,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "spec": { "lifecycle": { "shutdownTime": end } }
                })),
            )
            .await
            .map(|_| ()),
        None => Api::<Sandbox>::namespaced(scope.client.clone(), &scope.namespace)
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": { "shutdownTime": end } })),
            )
            .await
            .map(|_| ()),
    };
    result.map_err(|e| api_error("set the sandbox's end", &e))
}

async fn set_mode(scope: &Scope, name: &str, mode: &str) -> Result<Sandbox, Response<Body>> {
    Api::<Sandbox>::namespaced(scope.client.clone(), &scope.namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "operatingMode": mode } })),
        )
        .await
        .map_err(|e| api_error("patch the Sandbox", &e))
}

/// The end a `connect` gives a Sandbox, if it moves it: E2B's rule, a later end only (`timeout`
/// seconds from `now`, E2B's default when none is given), so that a connect never shortens a
/// Sandbox's life; and an auto-paused Sandbox, past its end, always gets a new one, or its
/// claim would suspend it again at once. A Sandbox with no end keeps none.
fn end_on_connect(
    sandbox: &Sandbox,
    claim: Option<&SandboxClaim>,
    timeout: Option<u64>,
    now: Timestamp,
) -> Option<Time> {
    let current = match claim {
        Some(claim) => claim.spec.lifecycle.as_ref()?.shutdown_time.clone()?,
        None => sandbox.spec.shutdown_time.clone()?,
    };
    let seconds = i64::try_from(timeout.unwrap_or(DEFAULT_TIMEOUT).clamp(1, MAX_TIMEOUT)).ok()?;
    let end = now + SignedDuration::from_secs(seconds);
    (end > current.0).then_some(Time(end))
}

/// `POST /v2/sandboxes/{id}/connect`: resumes it (with its memory where it checkpoints),
/// moves its end when `timeout` is given, and answers once its runtime does.
pub(super) async fn connect(state: &State, scope: &Scope, id: &str, body: &[u8]) -> Response<Body> {
    let timeout = match parse_timeout(body) {
        Ok(timeout) => timeout,
        Err(e) => return e.response(),
    };
    let (sandbox, claim) = match read(state, scope, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Some(end) = end_on_connect(&sandbox, claim.as_ref(), timeout, Timestamp::now())
        && let Err(response) = set_end(scope, &sandbox, end).await
    {
        return response;
    }
    let name = kube::ResourceExt::name_any(&sandbox);
    if let Err(response) = set_mode(scope, &name, "Running").await {
        return response;
    }
    ready_answer(state, scope, &name, &template_of(&sandbox), Seen::Already).await
}

/// `POST /sandboxes/{id}/pause`: suspends it and answers once it is suspended (409 when it
/// already is). The answer's [`crate::api::PAUSE_KEPT_HEADER`] says whether its memory was checkpointed or only
/// its files are kept.
pub(super) async fn pause(state: &State, scope: &Scope, id: &str) -> Response<Body> {
    let (sandbox, _) = match read(state, scope, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if state_of(&sandbox) == "paused" {
        return error(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already paused"),
        );
    }
    let name = kube::ResourceExt::name_any(&sandbox);
    if let Err(response) = set_mode(scope, &name, "Suspended").await {
        return response;
    }
    let key = (scope.namespace.clone(), name);
    let deadline = tokio::time::Instant::now() + state.options.hold;
    let suspended = loop {
        let now = state.waker.sandbox(&key);
        let status = now.as_ref().and_then(|s| s.status.clone());
        if status.as_ref().and_then(|s| s.phase) == Some(crate::api::Phase::Suspended) {
            break status;
        }
        if now.is_none() {
            return error(StatusCode::NOT_FOUND, format!("sandbox {id} is gone"));
        }
        if tokio::time::Instant::now() >= deadline {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("sandbox {id} is pausing; it did not finish in time"),
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let checkpointed =
        CheckpointMode::supervised(sandbox.spec.lifecycle.as_ref().and_then(|l| l.checkpoint))
            && suspended
                .and_then(|s| s.checkpoint)
                .is_some_and(|c| c.outcome == crate::api::CheckpointOutcome::Checkpointed);
    let mut response = no_content();
    response.headers_mut().insert(
        crate::api::PAUSE_KEPT_HEADER,
        HeaderValue::from_static(if checkpointed { "memory" } else { "filesystem" }),
    );
    response
}

/// `POST /sandboxes/{id}/timeout`: it now ends `timeout` seconds from now.
pub(super) async fn timeout(state: &State, scope: &Scope, id: &str, body: &[u8]) -> Response<Body> {
    let timeout = match parse_timeout(body) {
        Ok(Some(timeout)) => timeout,
        Ok(None) => return error(StatusCode::BAD_REQUEST, "the request needs a timeout"),
        Err(e) => return e.response(),
    };
    let (sandbox, _) = match read(state, scope, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match set_end(scope, &sandbox, ends_in(timeout)).await {
        Ok(()) => no_content(),
        Err(response) => response,
    }
}

/// `DELETE /sandboxes/{id}`: the claim that holds it goes, and the Sandbox with it; a
/// Sandbox without a claim is deleted itself.
pub(super) async fn kill(state: &State, scope: &Scope, id: &str) -> Response<Body> {
    let name = match find(state, scope, id) {
        Ok(name) => name,
        Err(e) => return e.response(),
    };
    let sandboxes: Api<Sandbox> = Api::namespaced(scope.client.clone(), &scope.namespace);
    let sandbox = match sandboxes.get(&name).await {
        Ok(sandbox) => sandbox,
        Err(e) => return api_error("get the Sandbox", &e),
    };
    let deleted = match claim_of(&sandbox) {
        Some(claim) => Api::<SandboxClaim>::namespaced(scope.client.clone(), &scope.namespace)
            .delete(&claim, &DeleteParams::default())
            .await
            .map(|_| ()),
        None => sandboxes
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    };
    match deleted {
        Ok(()) => no_content(),
        Err(e) => api_error("delete", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_ending(at: Timestamp) -> SandboxClaim {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "SandboxClaim",
            "metadata": {"name": "e2b-x", "namespace": "team"},
            "spec": {
                "sandboxTemplateRef": {"name": "python"},
                "lifecycle": {"shutdownTime": Time(at), "shutdownPolicy": "Suspend"},
            },
        }))
        .expect("a claim")
    }

    fn sandbox() -> Sandbox {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "x", "namespace": "team"},
            "spec": {"podTemplate": {"spec": {"containers": [{"name": "a", "image": "x"}]}}},
        }))
        .expect("a Sandbox")
    }

    #[test]
    fn connect_only_ever_moves_the_end_later() {
        let now = Timestamp::now();
        let in_an_hour = now + SignedDuration::from_secs(3600);
        let long = claim_ending(in_an_hour);
        assert_eq!(
            end_on_connect(&sandbox(), Some(&long), Some(60), now),
            None,
            "a connect does not shorten a Sandbox's life"
        );
        assert_eq!(
            end_on_connect(&sandbox(), Some(&long), Some(7200), now),
            Some(Time(now + SignedDuration::from_secs(7200)))
        );
    }

    #[test]
    fn an_auto_paused_sandbox_gets_a_new_end_on_connect() {
        let now = Timestamp::now();
        let past = claim_ending(now - SignedDuration::from_secs(10));
        assert_eq!(
            end_on_connect(&sandbox(), Some(&past), None, now),
            Some(Time(
                now + SignedDuration::from_secs(i64::try_from(DEFAULT_TIMEOUT).expect("small"))
            )),
            "E2B's default timeout, or the claim would suspend it again at once"
        );
        assert_eq!(
            end_on_connect(&sandbox(), None, Some(60), now),
            None,
            "a Sandbox with no end keeps none"
        );
    }
}
