use clap::Args;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};

use super::CliError;
use crate::activity::LAST_ACTIVITY;
use crate::api::Sandbox;

#[derive(Args, Debug)]
pub struct TouchArgs {
    /// The Sandbox, as `namespace/name` (or `name` in the kubeconfig's namespace).
    sandbox: String,
}

/// Records activity now: the Sandbox counts as used, and its idle clock starts over.
pub fn run(args: TouchArgs) -> Result<(), CliError> {
    super::with_client(|client| async move {
        let (namespace, name) = match args.sandbox.split_once('/') {
            Some((namespace, name)) => (namespace.to_string(), name.to_string()),
            None => (client.default_namespace().to_string(), args.sandbox.clone()),
        };
        let api: Api<Sandbox> = Api::namespaced(client, &namespace);
        let now = Timestamp::now().to_string();
        let patch = serde_json::json!({ "metadata": { "annotations": { LAST_ACTIVITY: now } } });
        let params = PatchParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| CliError::Touch(format!("{namespace}/{name}: {e}")))?;
        println!("{namespace}/{name} touched at {now}");
        Ok(())
    })
}
