//! `sandman policy sign`: signs a pushed policy artifact, cosign-format, with a PKCS#8 P-256
//! key, and pushes the signature beside it (`sha256-<digest>.sig`).

use std::path::PathBuf;

use clap::Args;

use super::PolicyCliError;
use crate::distribution::auth::docker_login;
use crate::distribution::oci::Reference;
use crate::distribution::signature;
use crate::http_client::HttpClient;

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The private key: PEM, PKCS#8 (`-----BEGIN PRIVATE KEY-----`), ECDSA P-256.
    #[arg(long)]
    key: PathBuf,
    /// The artifact: `registry/repository@sha256:…` (or a tag, resolved to its digest now).
    reference: String,
}

pub async fn run(args: SignArgs) -> Result<(), PolicyCliError> {
    let reference =
        Reference::parse(&args.reference).map_err(|e| PolicyCliError::Push(e.to_string()))?;
    let digest = sign(&reference, &args.key).await?;
    println!(
        "signed {}/{}@{digest}",
        reference.registry, reference.repository
    );
    Ok(())
}

/// Signs what `reference` names with the key in `key`; returns the signed manifest digest.
pub async fn sign(reference: &Reference, key: &std::path::Path) -> Result<String, PolicyCliError> {
    let private = std::fs::read_to_string(key)
        .map_err(|e| PolicyCliError::Read(key.to_path_buf(), e.to_string()))?;
    let http = HttpClient::new().map_err(|e| PolicyCliError::Push(e.to_string()))?;
    let credentials = docker_login(&reference.registry).map_err(PolicyCliError::Push)?;
    signature::push_signature(&http, reference, &private, credentials.as_ref())
        .await
        .map_err(|e| PolicyCliError::Push(format!("sign {reference}: {e}")))
}
