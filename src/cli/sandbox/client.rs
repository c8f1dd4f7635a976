//! Which Sandbox the CLI reaches, and with what token: its runtime is called through the
//! gateway (`crate::runtime_client`), carrying the Sandbox's own token in `X-Access-Token`. The token comes from `--token`, or from the Sandbox's token
//! Secret read with the caller's kubeconfig, so the CLI can do no more than its user may.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::SandboxError;
use crate::api::Sandbox;
pub use crate::runtime_client::{RuntimeClient as Runtime, Stream, full};

/// Where the gateway is and what opens the Sandbox, as flags or environment give them.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The gateway's URL (plain HTTP), e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "SANDMAN_GATEWAY")]
    pub gateway: String,
    /// The Sandbox's token; by default read from its Secret with the current kubeconfig.
    #[arg(long, env = "SANDMAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `namespace/name`, or `name` in the kubeconfig's namespace.
pub fn parse_target(
    target: &str,
    default_namespace: &str,
) -> Result<(String, String), SandboxError> {
    let (namespace, name) = match target.split_once('/') {
        Some((namespace, name)) => (namespace, name),
        None => (default_namespace, target),
    };
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return Err(SandboxError::Usage(format!(
            "{target:?} is not a Sandbox: write namespace/name"
        )));
    }
    Ok((namespace.to_string(), name.to_string()))
}

/// The runtime of `target`, with the token from `--token` or from its Secret.
pub async fn connect(connection: &Connection, target: &str) -> Result<Runtime, SandboxError> {
    let token = connection.token.clone().filter(|t| !t.is_empty());
    let (namespace, name, token) = match token {
        Some(token) => {
            let default = kube::config::Kubeconfig::read()
                .ok()
                .and_then(|k| k.contexts.first()?.context.clone()?.namespace)
                .unwrap_or_else(|| "default".into());
            let (namespace, name) = parse_target(target, &default)?;
            (namespace, name, token)
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| SandboxError::Token(format!("kubeconfig: {e}")))?;
            let (namespace, name) = parse_target(target, client.default_namespace())?;
            let token = token_from_secret(client, &namespace, &name).await?;
            (namespace, name, token)
        }
    };
    Ok(Runtime::new(
        &connection.gateway,
        (&namespace, &name),
        token,
    ))
}

/// The Sandbox's token, from the Secret its status names; reading it takes `get` on that
/// Secret, which is the caller's own right or not.
async fn token_from_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String, SandboxError> {
    let sandbox = Api::<Sandbox>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| SandboxError::Token(format!("{namespace}/{name}: {e}")))?;
    let secret = sandbox
        .status
        .and_then(|s| s.gateway_token)
        .map(|t| t.secret)
        .ok_or_else(|| {
            SandboxError::Token(format!(
                "{namespace}/{name} has no token yet (status.gatewayToken)"
            ))
        })?;
    let secret = Api::<Secret>::namespaced(client, namespace)
        .get(&secret)
        .await
        .map_err(|e| SandboxError::Token(format!("Secret {namespace}/{secret}: {e}")))?;
    secret
        .data
        .and_then(|d| {
            d.get("token")
                .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        })
        .ok_or_else(|| {
            SandboxError::Token(format!(
                "Secret {namespace}/{} has no key token",
                secret.metadata.name.unwrap_or_default()
            ))
        })
}
