//! `sandman policy verify`: checks, on the author's machine, the signature the operator checks
//! for `spec.wasm.verify`: a cosign-format signature beside the artifact that names its very
//! manifest and verifies under the public key.

use std::path::{Path, PathBuf};

use clap::Args;

use super::PolicyCliError;
use crate::distribution::auth::docker_login;
use crate::distribution::oci::Reference;
use crate::distribution::signature;
use crate::http_client::HttpClient;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The public key: PEM, PKIX (`-----BEGIN PUBLIC KEY-----`, as `cosign.pub`).
    #[arg(long)]
    key: PathBuf,
    /// The artifact: `registry/repository:tag` or `…@sha256:…`.
    reference: String,
}

pub async fn run(args: VerifyArgs) -> Result<(), PolicyCliError> {
    let reference = parse(&args.reference)?;
    let digest = verify(&reference, &args.key).await?;
    println!(
        "verified {}/{}@{digest} under {}",
        reference.registry,
        reference.repository,
        args.key.display()
    );
    Ok(())
}

pub fn parse(text: &str) -> Result<Reference, PolicyCliError> {
    Reference::parse(text).map_err(|e| PolicyCliError::Input(format!("{text}: {e}")))
}

/// Verifies what `reference` names under the public key in `key`, with `docker login`'s
/// credentials; returns the manifest digest that was verified.
pub async fn verify(reference: &Reference, key: &Path) -> Result<String, PolicyCliError> {
    let public = std::fs::read_to_string(key)
        .map_err(|e| PolicyCliError::Read(key.to_path_buf(), e.to_string()))?;
    verified_digest(reference, &public)
        .await
        .map_err(|failure| match failure {
            Failure::Fetch(e) => PolicyCliError::Fetch(reference.to_string(), e),
            Failure::Signature(e) => PolicyCliError::SignatureInvalid(reference.to_string(), e),
        })
}

/// Why a signature check did not pass: the registry did not answer, or the signature is
/// missing or wrong.
pub enum Failure {
    Fetch(String),
    Signature(String),
}

/// The one check every command makes (`verify`, `pull --key`, and the `spec.wasm.verify` of a
/// manifest under `--key`): `reference` is resolved to its manifest digest once, and the
/// signature is checked for that digest, so that a tag moved in between cannot swap what was
/// checked; `public` is the key's PEM text.
pub async fn verified_digest(reference: &Reference, public: &str) -> Result<String, Failure> {
    let http = HttpClient::new().map_err(|e| Failure::Fetch(e.to_string()))?;
    let credentials = docker_login(&reference.registry).map_err(Failure::Fetch)?;
    let digest = signature::manifest_digest(&http, reference, credentials.as_ref())
        .await
        .map_err(|e| Failure::Fetch(e.to_string()))?;
    let pinned = Reference {
        digest: Some(digest.clone()),
        ..reference.clone()
    };
    signature::verify(&http, &pinned, public, credentials.as_ref())
        .await
        .map_err(|e| Failure::Signature(e.to_string()))?;
    Ok(digest)
}
