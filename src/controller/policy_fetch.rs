//! Reads a policy's component from its source: a ConfigMap's binaryData, a URL, or an OCI
//! artifact. Bytes only; the digest check and the compile happen in the caller.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;

use crate::api::WasmSource;
use crate::distribution::http::HttpClient;
use crate::distribution::oci::{self, Reference};

pub async fn fetch(
    client: &Client,
    http: &HttpClient,
    source: &WasmSource<'_>,
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
            oci::pull(http, &reference)
                .await
                .map(|bytes| bytes.to_vec())
                .map_err(|e| e.to_string())
        }
    }
}
