//! Policy components as OCI artifacts, following the CNCF Wasm OCI artifact layout: a manifest
//! whose config is `application/vnd.wasm.config.v0+json` and whose one layer is the component,
//! `application/wasm`. Pull and push over the distribution API (`/v2/`), answering Basic and
//! Bearer challenges (`auth.rs`).

use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::FetchError;
use super::auth::{Credentials, Session};
use super::sha256_hex;
use crate::http_client::{HttpClient, resolve};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_MEDIA_TYPE: &str = "application/wasm";

/// `registry/repository[:tag][@sha256:digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, FetchError> {
        let invalid =
            |why: &str| FetchError::Protocol(format!("invalid OCI reference {text:?}: {why}"));
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| invalid("only sha256 digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid("the digest is not 64 hex digits"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .filter(|(host, _)| host.contains('.') || host.contains(':') || *host == "localhost")
            .ok_or_else(|| {
                invalid("name the registry, as in registry.example:5000/policies/name:tag")
            })?;
        // A colon after the last slash starts the tag; one before it belongs to a port.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => {
                (repository.to_string(), Some(tag.to_string()))
            }
            _ => (path.to_string(), None),
        };
        if repository.is_empty()
            || !repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        {
            return Err(invalid(
                "the repository must be lowercase letters, digits and ._-/",
            ));
        }
        if tag.is_none() && digest.is_none() {
            return Err(invalid("give a tag or a digest"));
        }
        Ok(Self {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// Loopback registries speak plain HTTP, as Docker assumes; every other one TLS.
    pub(super) fn base(&self) -> String {
        let scheme = if super::is_loopback(&self.registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}/v2/{}", self.registry, self.repository)
    }

    /// The digest when pinned, else the tag.
    fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// Downloads the component that `reference` names and checks it against the manifest.
pub async fn pull(
    client: &HttpClient,
    reference: &Reference,
    credentials: Option<&Credentials>,
) -> Result<Bytes, FetchError> {
    let base = reference.base();
    let mut session = Session::new(
        client,
        credentials,
        format!("repository:{}:pull", reference.repository),
    );
    let manifest_url = format!("{base}/manifests/{}", reference.manifest_reference());
    let response = session
        .get(&manifest_url, &[(header::ACCEPT, MANIFEST_MEDIA_TYPE)])
        .await?;
    if let Some(pinned) = &reference.digest
        && format!("sha256:{}", sha256_hex(&response.body)) != *pinned
    {
        return Err(FetchError::Protocol(format!(
            "{reference}: the registry returned a manifest that does not match its digest"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&response.body)
        .map_err(|e| FetchError::Protocol(format!("{reference}: not an OCI manifest: {e}")))?;
    let layer = match manifest.layers.as_slice() {
        [only] => only,
        layers => layers
            .iter()
            .find(|l| l.media_type == WASM_MEDIA_TYPE)
            .ok_or_else(|| {
                FetchError::Protocol(format!(
                    "{reference}: no {WASM_MEDIA_TYPE} layer among {} layers",
                    layers.len()
                ))
            })?,
    };
    let blob = session
        .get(&format!("{base}/blobs/{}", layer.digest), &[])
        .await?
        .body;
    if format!("sha256:{}", sha256_hex(&blob)) != layer.digest {
        return Err(FetchError::Protocol(format!(
            "{reference}: the layer's content does not match its digest {}",
            layer.digest
        )));
    }
    Ok(blob)
}

/// What a push published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The manifest's digest, to pin the reference (`…@sha256:…`).
    pub manifest_digest: String,
    /// The component's sha256, for `spec.wasm.sha256`.
    pub component_sha256: String,
}

/// Publishes `wasm` under `reference` (which needs a tag).
pub async fn push(
    client: &HttpClient,
    reference: &Reference,
    wasm: Bytes,
    credentials: Option<&Credentials>,
) -> Result<Pushed, FetchError> {
    let mut session = Session::new(
        client,
        credentials,
        format!("repository:{}:pull,push", reference.repository),
    );
    let tag = reference.tag.as_deref().ok_or_else(|| {
        FetchError::Protocol(format!(
            "invalid OCI reference {reference}: a push needs a tag"
        ))
    })?;
    let component_sha256 = sha256_hex(&wasm);
    let config = Bytes::from(
        serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [format!("sha256:{component_sha256}")],
        })
        .to_string(),
    );
    let manifest_digest = publish(
        &mut session,
        &reference.base(),
        tag,
        (CONFIG_MEDIA_TYPE, config),
        Descriptor::of(WASM_MEDIA_TYPE, &wasm, Default::default()),
        wasm,
        Some(WASM_MEDIA_TYPE),
    )
    .await?;
    Ok(Pushed {
        manifest_digest,
        component_sha256,
    })
}

impl Descriptor {
    /// The descriptor of `blob`, of `media_type`.
    pub(super) fn of(
        media_type: &str,
        blob: &[u8],
        annotations: std::collections::BTreeMap<String, String>,
    ) -> Self {
        Self {
            media_type: media_type.into(),
            digest: format!("sha256:{}", sha256_hex(blob)),
            size: blob.len() as u64,
            annotations,
        }
    }
}

/// Uploads a config and one layer, then puts a manifest of them under `tag`; returns the
/// manifest's digest. Both the Wasm artifact and its signature are this shape.
pub(super) async fn publish(
    session: &mut Session<'_>,
    base: &str,
    tag: &str,
    (config_media_type, config): (&str, Bytes),
    layer: Descriptor,
    layer_blob: Bytes,
    artifact_type: Option<&str>,
) -> Result<String, FetchError> {
    let config_descriptor = Descriptor::of(config_media_type, &config, Default::default());
    upload_blob(session, base, &config_descriptor.digest, config).await?;
    upload_blob(session, base, &layer.digest, layer_blob).await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: artifact_type.map(str::to_string),
        config: config_descriptor,
        layers: vec![layer],
    };
    let body = Bytes::from(
        serde_json::to_vec(&manifest).map_err(|e| FetchError::Protocol(e.to_string()))?,
    );
    let manifest_digest = format!("sha256:{}", sha256_hex(&body));
    let url = format!("{base}/manifests/{tag}");
    let response = session
        .send(
            Method::PUT,
            &url,
            &[(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)],
            body,
        )
        .await?;
    expect(&url, &response, StatusCode::CREATED)?;
    Ok(manifest_digest)
}

/// A monolithic upload: open a session, then PUT the whole blob with its digest.
async fn upload_blob(
    session: &mut Session<'_>,
    base: &str,
    digest: &str,
    blob: Bytes,
) -> Result<(), FetchError> {
    let start = format!("{base}/blobs/uploads/");
    let response = session
        .send(Method::POST, &start, &[], Bytes::new())
        .await?;
    expect(&start, &response, StatusCode::ACCEPTED)?;
    let location = response
        .headers
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| FetchError::Protocol(format!("{start}: no upload Location")))?;
    let start_uri = start
        .parse()
        .map_err(|e| FetchError::InvalidUrl(format!("{start}: {e}")))?;
    let upload = resolve(&start_uri, location)?.to_string();
    let separator = if upload.contains('?') { '&' } else { '?' };
    let url = format!("{upload}{separator}digest={digest}");
    let response = session
        .send(
            Method::PUT,
            &url,
            &[(header::CONTENT_TYPE, "application/octet-stream")],
            blob,
        )
        .await?;
    expect(&url, &response, StatusCode::CREATED)
}

fn expect(
    url: &str,
    response: &crate::http_client::Response,
    status: StatusCode,
) -> Result<(), FetchError> {
    if response.status == status {
        return Ok(());
    }
    Err(FetchError::Rejected {
        url: url.to_string(),
        status: response.status,
        body: String::from_utf8_lossy(&response.body)
            .chars()
            .take(300)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_registry_repository_tag_and_digest() {
        let r = Reference::parse("127.0.0.1:5000/policies/gvisor:v1").expect("parse");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "policies/gvisor");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.base(), "http://127.0.0.1:5000/v2/policies/gvisor");

        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/acme/p@{digest}")).expect("parse");
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (None, Some(digest.as_str()))
        );
        assert!(r.base().starts_with("https://ghcr.io/"));
    }

    #[test]
    fn ambiguous_or_malformed_references_are_refused() {
        for bad in [
            "policies/gvisor:v1",
            "registry.example/Policies:v1",
            "registry.example/p",
            "registry.example/p@sha256:abc",
            "registry.example/p@md5:aaaa",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
