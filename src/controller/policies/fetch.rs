//! The operator's [`Fetcher`]: a policy's component from a ConfigMap's binaryData, a URL, or an
//! OCI artifact with an imagePullSecret from the operator's namespace. Bytes only; the digest
//! check and the compile are `policy::loader`'s, shared with the CLI.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;

use crate::api::{VerifySpec, WasmSource};
use crate::distribution::auth::Credentials;
use crate::distribution::oci::{self, Reference};
use crate::distribution::signature;
use crate::http_client::HttpClient;
use crate::policy::loader::{Fetcher, SourceError};

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

/// Reads components as the operator may: through its client and its HTTP client.
pub struct ClusterFetcher<'a> {
    pub client: &'a Client,
    pub http: &'a HttpClient,
    pub pull_secrets: &'a PullSecrets,
}

impl Fetcher for ClusterFetcher<'_> {
    async fn fetch(
        &self,
        source: &WasmSource<'_>,
        pull_secret: Option<&str>,
    ) -> Result<Vec<u8>, SourceError> {
        match source {
            WasmSource::ConfigMap(source) => {
                let at = format!("ConfigMap {}/{}", source.namespace, source.name);
                let config_maps: Api<ConfigMap> =
                    Api::namespaced(self.client.clone(), &source.namespace);
                let config_map = config_maps
                    .get_opt(&source.name)
                    .await
                    .map_err(|e| SourceError::Transfer(format!("read {at}: {e}")))?
                    .ok_or_else(|| SourceError::Missing(format!("{at} not found")))?;
                config_map
                    .binary_data
                    .and_then(|mut data| data.remove(&source.key))
                    .map(|bytes| bytes.0)
                    .ok_or_else(|| {
                        SourceError::Missing(format!("{at} has no binaryData key {:?}", source.key))
                    })
            }
            WasmSource::Url(url) => self
                .http
                .get(url, &[])
                .await
                .map(|response| response.body.to_vec())
                .map_err(|e| SourceError::Transfer(e.to_string())),
            WasmSource::Image(image) => {
                let reference =
                    Reference::parse(image).map_err(|e| SourceError::Missing(e.to_string()))?;
                let credentials = match pull_secret {
                    Some(name) => Some(
                        credentials(self.client, self.pull_secrets, name, &reference.registry)
                            .await
                            .map_err(SourceError::Missing)?,
                    ),
                    None => None,
                };
                oci::pull(self.http, &reference, credentials.as_ref())
                    .await
                    .map(|bytes| bytes.to_vec())
                    .map_err(|e| SourceError::Transfer(e.to_string()))
            }
        }
    }

    async fn verify(
        &self,
        image: &str,
        pull_secret: Option<&str>,
        verify: &VerifySpec,
    ) -> Result<(), String> {
        let key = self.public_key(verify).await?;
        let reference = Reference::parse(image).map_err(|e| e.to_string())?;
        let credentials = match pull_secret {
            Some(name) => {
                Some(credentials(self.client, self.pull_secrets, name, &reference.registry).await?)
            }
            None => None,
        };
        signature::verify(self.http, &reference, &key, credentials.as_ref())
            .await
            .map_err(|e| e.to_string())
    }
}

impl ClusterFetcher<'_> {
    /// The public key PEM that `verify` names.
    async fn public_key(&self, verify: &VerifySpec) -> Result<String, String> {
        if let Some(source) = &verify.config_map {
            let at = format!("ConfigMap {}/{}", source.namespace, source.name);
            let config_map = Api::<ConfigMap>::namespaced(self.client.clone(), &source.namespace)
                .get_opt(&source.name)
                .await
                .map_err(|e| format!("read {at}: {e}"))?
                .ok_or_else(|| format!("{at} not found"))?;
            return config_map
                .data
                .and_then(|mut d| d.remove(&source.key))
                .ok_or_else(|| format!("{at} has no data key {:?}", source.key));
        }
        if let Some(secret) = &verify.secret {
            let at = format!("Secret {}/{}", self.pull_secrets.namespace, secret.name);
            let found =
                Api::<Secret>::namespaced(self.client.clone(), &self.pull_secrets.namespace)
                    .get_opt(&secret.name)
                    .await
                    .map_err(|e| format!("read {at}: {e}"))?
                    .ok_or_else(|| format!("{at} not found"))?;
            let bytes = found
                .data
                .and_then(|mut d| d.remove(&secret.key))
                .ok_or_else(|| format!("{at} has no key {:?}", secret.key))?;
            return String::from_utf8(bytes.0)
                .map_err(|_| format!("{at}: the key is not PEM text"));
        }
        Err("verify names no key".into())
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
