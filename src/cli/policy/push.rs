use std::path::PathBuf;

use clap::Args;

use super::PolicyCliError;
use crate::distribution::auth::docker_login;
use crate::distribution::oci::{self, Reference};
use crate::http_client::HttpClient;

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The component (`.wasm`).
    wasm: PathBuf,
    /// Where to publish it: `registry/repository:tag`.
    reference: String,
    /// Also sign it with this private key (PEM, PKCS#8, ECDSA P-256), as `policy sign` does.
    #[arg(long = "sign")]
    sign_key: Option<PathBuf>,
}

pub async fn run(args: PushArgs) -> Result<(), PolicyCliError> {
    let bytes = std::fs::read(&args.wasm)
        .map_err(|e| PolicyCliError::Read(args.wasm.clone(), e.to_string()))?;
    let reference =
        Reference::parse(&args.reference).map_err(|e| PolicyCliError::Push(e.to_string()))?;
    let http = HttpClient::new().map_err(|e| PolicyCliError::Push(e.to_string()))?;
    let credentials = docker_login(&reference.registry).map_err(PolicyCliError::Push)?;
    let pushed = oci::push(&http, &reference, bytes.into(), credentials.as_ref())
        .await
        .map_err(|e| PolicyCliError::Push(e.to_string()))?;
    println!("pushed {reference}@{}", pushed.manifest_digest);
    if let Some(key) = &args.sign_key {
        let pinned = Reference {
            digest: Some(pushed.manifest_digest.clone()),
            ..reference.clone()
        };
        super::sign::sign(&pinned, key).await?;
        println!(
            "signed {}/{}@{}",
            reference.registry, reference.repository, pushed.manifest_digest
        );
    }
    println!("# in the SandboxPolicy:");
    println!("wasm:");
    println!(
        "  image: {}/{}@{}",
        reference.registry, reference.repository, pushed.manifest_digest
    );
    println!("  sha256: {}", pushed.component_sha256);
    Ok(())
}
