//! `sandman policy pull`: downloads a pushed policy artifact's component into a file, checked
//! against its manifest, and with `--key` only once its signature verifies; prints the sha256
//! to pin.

use std::path::PathBuf;

use clap::Args;

use super::PolicyCliError;
use super::verify;
use crate::distribution::auth::docker_login;
use crate::distribution::{oci, sha256_hex};
use crate::http_client::HttpClient;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The artifact: `registry/repository:tag` or `…@sha256:…`.
    reference: String,
    /// Where to write the component.
    #[arg(long, short = 'o', default_value = "policy.wasm")]
    output: PathBuf,
    /// Verify its signature under this public key (PEM) first; nothing is written if it does
    /// not verify.
    #[arg(long)]
    key: Option<PathBuf>,
}

pub async fn run(args: PullArgs) -> Result<(), PolicyCliError> {
    let mut reference = verify::parse(&args.reference)?;
    if let Some(key) = &args.key {
        // Pull exactly the manifest that verified.
        reference.digest = Some(verify::verify(&reference, key).await?);
    }
    let fetch = |e: String| PolicyCliError::Fetch(reference.to_string(), e);
    let http = HttpClient::new().map_err(|e| fetch(e.to_string()))?;
    let credentials = docker_login(&reference.registry).map_err(fetch)?;
    let wasm = oci::pull(&http, &reference, credentials.as_ref())
        .await
        .map_err(|e| fetch(e.to_string()))?;
    std::fs::write(&args.output, &wasm)
        .map_err(|e| PolicyCliError::Read(args.output.clone(), e.to_string()))?;
    println!(
        "wrote {} ({} bytes, sha256 {}){}",
        args.output.display(),
        wasm.len(),
        sha256_hex(&wasm),
        if args.key.is_some() {
            ", signature verified"
        } else {
            ", signature not checked (no --key)"
        }
    );
    Ok(())
}
