//! Helpers of the fault tests: waits that outlast a restart of the API server.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch};
use sandman::api::Phase;
use sandman_testenv::harness::{TestContext, eventually};

use super::sandboxes;

/// Long waits: a restart of the API server takes tens of seconds on a loaded machine.
pub const LONG: Duration = Duration::from_secs(300);

pub async fn count<K>(api: &Api<K>) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

pub async fn wait_all(ctx: &TestContext, names: &[String], phase: Phase) {
    let api = sandboxes(ctx);
    eventually(&format!("all {} in {phase:?}", names.len()), LONG, || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            let done = list
                .items
                .iter()
                .filter(|s| names.contains(&s.name_any()))
                .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(phase))
                .count();
            (done == names.len()).then_some(())
        }
    })
    .await;
}

/// Waits until the API server answers again after a restart.
pub async fn api_answers(ctx: &TestContext) {
    let api = sandboxes(ctx);
    eventually("the API server to answer", LONG, || {
        let api = api.clone();
        async move { api.list(&ListParams::default().limit(1)).await.ok() }
    })
    .await;
}

pub fn set_mode_patch(mode: &str) -> Patch<serde_json::Value> {
    Patch::Merge(serde_json::json!({ "spec": { "operatingMode": mode } }))
}
