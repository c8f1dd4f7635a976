//! The SandboxTemplate controller: one NetworkPolicy per template, selecting the pods of the
//! Sandboxes made from it. Ingress is denied except from the gateway and what the template
//! allows; egress is denied except DNS and the template's allow-list.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::instrument;

use crate::api::{GatewaySpec, NetworkPolicyManagement, Sandbox, SandboxTemplate};
use crate::controller::api_call::{ApiCallFailed, failed, scoped};
use crate::controller::blueprint::TEMPLATE_LABEL;
use crate::controller::network;

pub use crate::controller::network::GATEWAY_POD_LABELS;

/// Why a template reconcile failed.
pub type TemplateError = ApiCallFailed;

pub struct TemplateContext {
    pub client: Client,
    /// Where the gateway runs: its pods there may reach every template's Sandboxes.
    pub gateway_namespace: String,
}

/// The NetworkPolicy of a template's Sandboxes.
pub fn network_policy_name(template: &str) -> String {
    format!("sandman-template-{template}")
}

/// The NetworkPolicy a template asks for, or none when its network is managed elsewhere.
pub fn network_policy(
    template: &SandboxTemplate,
    gateway_namespace: &str,
) -> Option<NetworkPolicy> {
    if template.spec.network_policy_management == NetworkPolicyManagement::Unmanaged {
        return None;
    }
    let extra = template.spec.network_policy.clone().unwrap_or_default();
    // The port the gateway forwards to, worked out as for any Sandbox of the template.
    let member = Sandbox::new(
        "member",
        crate::controller::blueprint::sandbox_spec(&template.spec),
    );
    let name = template.name_any();
    Some(network::default_deny(network::DefaultDeny {
        name: network_policy_name(&name),
        namespace: template.namespace(),
        selector: BTreeMap::from([(TEMPLATE_LABEL.to_string(), name.clone())]),
        owner: template.controller_owner_ref(&()),
        gateway_port: GatewaySpec::target_port(&member),
        gateway_namespace,
        ingress: extra.ingress,
        egress: extra.egress,
    }))
}

/// Runs the SandboxTemplate controller until `shutdown`.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    gateway_namespace: String,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let templates: Api<SandboxTemplate> = scoped(&client, namespace.as_deref());
    let policies: Api<NetworkPolicy> = scoped(&client, namespace.as_deref());
    let config = watcher::Config::default().any_semantic();
    Controller::new(templates, config.clone())
        // A NetworkPolicy edited or deleted by hand is put back.
        .owns(policies, config.labels(TEMPLATE_LABEL))
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            error_policy,
            Arc::new(TemplateContext {
                client,
                gateway_namespace,
            }),
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(
    template: Arc<SandboxTemplate>,
    error: &TemplateError,
    _: Arc<TemplateContext>,
) -> Action {
    tracing::warn!(template = %template.name_any(), %error, "template reconcile failed");
    Action::requeue(crate::controller::ERROR_REQUEUE)
}

#[instrument(name = "template.reconcile", skip_all, fields(namespace = %template.namespace().unwrap_or_default(), template = %template.name_any()))]
async fn reconcile(
    template: Arc<SandboxTemplate>,
    ctx: Arc<TemplateContext>,
) -> Result<Action, TemplateError> {
    if template.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = template.namespace().unwrap_or_default();
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = network_policy_name(&template.name_any());
    let existing = api
        .get_opt(&name)
        .await
        .map_err(failed("get", format!("NetworkPolicy {name}")))?;
    // A NetworkPolicy of that name that this template does not own is left alone, as any
    // object sandman did not make (SECURITY.md).
    let ours = |policy: &NetworkPolicy| {
        template.uid().is_some_and(|uid| {
            policy
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
    };
    if existing.as_ref().is_some_and(|p| !ours(p)) {
        tracing::warn!(networkpolicy = %name, "a NetworkPolicy of this name is not the template's; left alone");
        return Ok(Action::requeue(std::time::Duration::from_secs(60)));
    }
    match network_policy(&template, &ctx.gateway_namespace) {
        Some(policy) => {
            api.patch(
                &name,
                &PatchParams::apply(crate::FIELD_MANAGER).force(),
                &Patch::Apply(&policy),
            )
            .await
            .map_err(failed("apply", format!("NetworkPolicy {name}")))?;
        }
        None if existing.is_some() => match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(failed("delete", format!("NetworkPolicy {name}"))(source));
            }
        },
        None => {}
    }
    Ok(Action::await_change())
}
