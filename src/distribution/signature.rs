//! Sigstore cosign-format signatures of policy artifacts, key-based: an ECDSA P-256 signature
//! over cosign's "simple signing" payload, stored as an OCI manifest under the tag
//! `sha256-<manifest digest>.sig` whose one layer is the payload and whose annotation
//! `dev.cosignproject.cosign/signature` holds the signature. `cosign verify --key` accepts what
//! `sandman policy sign` makes, and sandman accepts what `cosign sign --key` makes.
//!
//! Keys are PEM: a PKCS#8 `PRIVATE KEY` to sign (cosign's own encrypted keys are not read:
//! export one with `openssl` or use a KMS), a PKIX `PUBLIC KEY` to verify (as `cosign.pub`).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{StatusCode, header};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};

use super::auth::{Credentials, Session};
use super::oci::{Descriptor, MANIFEST_MEDIA_TYPE, Manifest, Reference};
use super::sha256_hex;
use crate::http_client::HttpClient;

pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The DER prefix of a P-256 public key's SubjectPublicKeyInfo, before the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the key is not usable: {0}")]
    Key(String),
    #[error("no signature of {0} was found")]
    Unsigned(String),
    #[error("no signature of {reference} verifies with the key ({tried} tried)")]
    Invalid { reference: String, tried: usize },
    #[error("{0}")]
    Registry(#[from] super::FetchError),
}

/// The body of a PEM block of `label`.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, SignatureError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| SignatureError::Key(format!("no {begin} block")))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| SignatureError::Key(format!("no {end} line")))?
        + start;
    let base64: String = text[start..stop].split_whitespace().collect();
    STANDARD
        .decode(base64)
        .map_err(|e| SignatureError::Key(format!("{label}: {e}")))
}

/// The payload cosign signs for the manifest `digest` of `reference`'s repository.
pub fn payload(reference: &Reference, digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": { "docker-reference": format!("{}/{}", reference.registry, reference.repository) },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// A base64 ECDSA P-256 signature of `payload` with the PKCS#8 key in `private_pem`.
pub fn sign(private_pem: &str, payload: &[u8]) -> Result<String, SignatureError> {
    let der = pem_body(private_pem, "PRIVATE KEY")?;
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
        .map_err(|e| SignatureError::Key(format!("not a PKCS#8 P-256 key: {e}")))?;
    let signature = key
        .sign(&rng, payload)
        .map_err(|e| SignatureError::Key(format!("signing failed: {e}")))?;
    Ok(STANDARD.encode(signature.as_ref()))
}

/// Whether `signature` (base64) signs `payload` under the PKIX P-256 key in `public_pem`.
pub fn verifies(public_pem: &str, payload: &[u8], signature: &str) -> Result<bool, SignatureError> {
    let der = pem_body(public_pem, "PUBLIC KEY")?;
    let point = der
        .strip_prefix(&P256_SPKI_PREFIX[..])
        .filter(|p| p.len() == 65)
        .ok_or_else(|| SignatureError::Key("not a P-256 public key".into()))?;
    let Ok(signature) = STANDARD.decode(signature.trim()) else {
        return Ok(false);
    };
    Ok(UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(payload, &signature)
        .is_ok())
}

/// The tag cosign keeps a manifest's signatures under.
pub fn signature_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1) + ".sig"
}

/// The manifest digest `reference` names: its own digest, or the one its tag resolves to.
pub async fn manifest_digest(
    client: &HttpClient,
    reference: &Reference,
    credentials: Option<&Credentials>,
) -> Result<String, SignatureError> {
    if let Some(digest) = &reference.digest {
        return Ok(digest.clone());
    }
    let mut session = Session::new(
        client,
        credentials,
        format!("repository:{}:pull", reference.repository),
    );
    let tag = reference.tag.as_deref().unwrap_or("latest");
    let url = format!("{}/manifests/{tag}", reference.base());
    let response = session
        .get(&url, &[(header::ACCEPT, MANIFEST_MEDIA_TYPE)])
        .await?;
    Ok(format!("sha256:{}", sha256_hex(&response.body)))
}

/// Signs the artifact `reference` names and pushes the signature beside it. Returns the
/// signed manifest digest.
pub async fn push_signature(
    client: &HttpClient,
    reference: &Reference,
    private_pem: &str,
    credentials: Option<&Credentials>,
) -> Result<String, SignatureError> {
    let digest = manifest_digest(client, reference, credentials).await?;
    let payload = Bytes::from(payload(reference, &digest));
    let signature = sign(private_pem, &payload)?;
    let mut session = Session::new(
        client,
        credentials,
        format!("repository:{}:pull,push", reference.repository),
    );
    let layer = Descriptor::of(
        PAYLOAD_MEDIA_TYPE,
        &payload,
        BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), signature)]),
    );
    super::oci::publish(
        &mut session,
        &reference.base(),
        &signature_tag(&digest),
        (CONFIG_MEDIA_TYPE, Bytes::from_static(b"{}")),
        layer,
        payload,
        None,
    )
    .await?;
    Ok(digest)
}

/// Checks that the artifact `reference` names carries a signature that verifies under
/// `public_pem` and names this very manifest. Any one such signature is enough.
pub async fn verify(
    client: &HttpClient,
    reference: &Reference,
    public_pem: &str,
    credentials: Option<&Credentials>,
) -> Result<(), SignatureError> {
    let digest = manifest_digest(client, reference, credentials).await?;
    let mut session = Session::new(
        client,
        credentials,
        format!("repository:{}:pull", reference.repository),
    );
    let base = reference.base();
    let url = format!("{base}/manifests/{}", signature_tag(&digest));
    let response = match session
        .get(&url, &[(header::ACCEPT, MANIFEST_MEDIA_TYPE)])
        .await
    {
        Ok(response) => response,
        Err(super::FetchError::Status(_, status)) if status == StatusCode::NOT_FOUND => {
            return Err(SignatureError::Unsigned(format!("{reference} ({digest})")));
        }
        Err(e) => return Err(e.into()),
    };
    let manifest: Manifest = serde_json::from_slice(&response.body).map_err(|e| {
        super::FetchError::Protocol(format!("{url}: not a signature manifest: {e}"))
    })?;
    let mut tried = 0;
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == PAYLOAD_MEDIA_TYPE)
    {
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        tried += 1;
        let payload = session
            .get(&format!("{base}/blobs/{}", layer.digest), &[])
            .await?
            .body;
        if format!("sha256:{}", sha256_hex(&payload)) != layer.digest {
            continue;
        }
        // The payload must name this manifest: a signature of another artifact, copied
        // beside this one, does not count.
        let names_this = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|p| {
                p["critical"]["image"]["docker-manifest-digest"]
                    .as_str()
                    .map(|d| d == digest)
            })
            .unwrap_or(false);
        if names_this && verifies(public_pem, &payload, signature)? {
            return Ok(());
        }
    }
    Err(SignatureError::Invalid {
        reference: reference.to_string(),
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        (key.serialize_pem(), key.public_key_pem())
    }

    #[test]
    fn a_signature_verifies_under_its_key_only() {
        let (private, public) = keys();
        let (_, other) = keys();
        let reference = Reference::parse("127.0.0.1:5000/policies/p:v1").expect("reference");
        let payload = payload(&reference, &format!("sha256:{}", "a".repeat(64)));
        let signature = sign(&private, &payload).expect("sign");
        assert!(verifies(&public, &payload, &signature).expect("verify"));
        assert!(!verifies(&other, &payload, &signature).expect("verify"));
        let mut tampered = payload.clone();
        tampered[10] ^= 1;
        assert!(!verifies(&public, &tampered, &signature).expect("verify"));
        assert_eq!(
            signature_tag(&format!("sha256:{}", "b".repeat(64))),
            format!("sha256-{}.sig", "b".repeat(64))
        );
    }
}
