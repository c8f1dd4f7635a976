//! Reads a policy's component from its source: a ConfigMap's binaryData, a URL, or an OCI
//! artifact. Bytes only; the digest check and the compile happen in the caller.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;

use crate::api::WasmSource;
use crate::distribution::auth::Credentials;
use crate::distribution::oci::{self, Reference};
use crate::http_client::HttpClient;

/// Where image pull secrets are read: the operator's own namespace, so that its RBAC needs no
/// Secret access anywhere else.
#[derive(Debug, Clone)]
pub struct PullSecrets {
    pub namespace: String,
}

impl Default for PullSecrets {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
        }
    }
}

pub async fn fetch(
    client: &Client,
    http: &HttpClient,
    source: &WasmSource<'_>,
    pull_secret: Option<(&PullSecrets, &str)>,
) -> Result<Vec<u8>, String> {
    match source {
        WasmSource::ConfigMap(source) => {
            let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &source.namespace);
            let config_map = config_maps
                .get_opt(&source.name)
                .await
                .map_err(|e| format!("read ConfigMap {}/{}: {e}", source.namespace, source.name))?
                .ok_or_else(|| {
                    format!("ConfigMap {}/{} not found", source.namespace, source.name)
                })?;
            config_map
                .binary_data
                .and_then(|mut data| data.remove(&source.key))
                .map(|bytes| bytes.0)
                .ok_or_else(|| {
                    format!(
                        "ConfigMap {}/{} has no binaryData key {:?}",
                        source.namespace, source.name, source.key
                    )
                })
        }
        WasmSource::Url(url) => http
            .get(url, &[])
            .await
            .map(|response| response.body.to_vec())
            .map_err(|e| e.to_string()),
        WasmSource::Image(image) => {
            let reference = Reference::parse(image).map_err(|e| e.to_string())?;
            let credentials = match pull_secret {
                Some((secrets, name)) => {
                    Some(credentials(client, secrets, name, &reference.registry).await?)
                }
                None => None,
            };
            oci::pull(http, &reference, credentials.as_ref())
                .await
                .map(|bytes| bytes.to_vec())
                .map_err(|e| e.to_string())
        }
    }
}

/// The credentials for `registry` in the pull secret `name`.
async fn credentials(
    client: &Client,
    secrets: &PullSecrets,
    name: &str,
    registry: &str,
) -> Result<Credentials, String> {
    let at = format!("imagePullSecret {}/{name}", secrets.namespace);
    let secret = Api::<Secret>::namespaced(client.clone(), &secrets.namespace)
        .get_opt(name)
        .await
        .map_err(|e| format!("read {at}: {e}"))?
        .ok_or_else(|| format!("{at} not found"))?;
    let config = secret
        .data
        .as_ref()
        .and_then(|data| data.get(".dockerconfigjson"))
        .ok_or_else(|| {
            format!("{at} has no .dockerconfigjson (type kubernetes.io/dockerconfigjson)")
        })?;
    Credentials::from_docker_config(&config.0, registry)
        .map_err(|e| format!("{at}: {e}"))?
        .ok_or_else(|| format!("{at} has no credentials for {registry}"))
}
