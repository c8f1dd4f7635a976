use std::path::PathBuf;

use clap::Args;

use super::{PolicyCliError, engine};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The component (`.wasm`).
    wasm: PathBuf,
}

pub fn run(args: InspectArgs) -> Result<(), PolicyCliError> {
    let bytes = std::fs::read(&args.wasm)
        .map_err(|e| PolicyCliError::Read(args.wasm.clone(), e.to_string()))?;
    let inspection = engine()?
        .inspect(&bytes)
        .map_err(|e| PolicyCliError::Load(args.wasm.display().to_string(), e.to_string()))?;
    let yaml = serde_yaml::to_string(&inspection)
        .map_err(|e| PolicyCliError::Input(format!("print the report: {e}")))?;
    print!("{yaml}");
    Ok(())
}
