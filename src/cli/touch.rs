use clap::Args;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};

use super::CliError;
use crate::activity::{LAST_ACTIVITY, WAKE_REQUESTED, wake_token};
use crate::api::{OperatingMode, Sandbox};

#[derive(Args, Debug)]
pub struct TouchArgs {
    /// The Sandbox, as `namespace/name` (or `name` in the kubeconfig's namespace).
    sandbox: String,
    /// Also end its suspension, as a request through the gateway would: the way to resume a
    /// Sandbox that a policy or its idleTimeout suspended, without changing its spec.
    #[arg(long)]
    wake: bool,
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
        let mut annotations = serde_json::json!({ LAST_ACTIVITY: now });
        let mut woken = false;
        if args.wake {
            let sandbox = api
                .get(&name)
                .await
                .map_err(|e| CliError::Touch(format!("{namespace}/{name}: {e}")))?;
            if sandbox.effective_mode() == OperatingMode::Suspended {
                annotations[WAKE_REQUESTED] = wake_token(&sandbox).into();
                woken = true;
            }
        }
        let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
        let params = PatchParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| CliError::Touch(format!("{namespace}/{name}: {e}")))?;
        println!("{namespace}/{name} touched at {now}");
        if woken {
            println!("{namespace}/{name} asked to resume; the operator resumes it");
        } else if args.wake {
            println!("{namespace}/{name} is not suspended");
        }
        Ok(())
    })
}
