//! `sandman policy pin`: writes a component's real sha256 into a SandboxPolicy manifest, in
//! place. Only the `sha256:` line changes, so comments and layout stay the author's.

use std::path::{Path, PathBuf};

use clap::Args;

use super::PolicyCliError;
use super::load::{self, strict_manifest};
use crate::distribution::sha256_hex;

#[derive(Args, Debug)]
pub struct PinArgs {
    /// The SandboxPolicy manifest (YAML) whose `spec.wasm.sha256` to write.
    manifest: PathBuf,
    /// The component to pin (a fresh build). Without it, the manifest's own url or image
    /// source is fetched and its digest pinned.
    #[arg(long)]
    wasm: Option<PathBuf>,
}

pub fn run(args: PinArgs) -> Result<(), PolicyCliError> {
    let text = std::fs::read_to_string(&args.manifest)
        .map_err(|e| PolicyCliError::Read(args.manifest.clone(), e.to_string()))?;
    let manifest = strict_manifest(&args.manifest, &text)?;
    let Some(pinned) = manifest.spec.wasm.as_ref().map(|w| w.sha256.clone()) else {
        return Err(PolicyCliError::Parse(
            args.manifest.clone(),
            "the manifest has no spec.wasm: a CEL policy has no component to pin".into(),
        ));
    };
    let digest = match &args.wasm {
        Some(file) => sha256_hex(
            &std::fs::read(file).map_err(|e| PolicyCliError::Read(file.clone(), e.to_string()))?,
        ),
        None => source_digest(&args.manifest)?,
    };
    if digest == pinned {
        println!("{} already pins sha256 {digest}", args.manifest.display());
        return Ok(());
    }
    let written =
        with_pin(&text, &digest).map_err(|e| PolicyCliError::Parse(args.manifest.clone(), e))?;
    // What is written must still be the same manifest, now with this pin.
    let check = strict_manifest(&args.manifest, &written)?;
    if check.spec.wasm.map(|w| w.sha256) != Some(digest.clone()) {
        return Err(PolicyCliError::Parse(
            args.manifest.clone(),
            "could not find the one spec.wasm.sha256 line to rewrite".into(),
        ));
    }
    std::fs::write(&args.manifest, written)
        .map_err(|e| PolicyCliError::Read(args.manifest.clone(), e.to_string()))?;
    println!("{}: sha256 {pinned} -> {digest}", args.manifest.display());
    Ok(())
}

/// The digest of what the manifest's source serves: the load refuses a mismatch and says
/// what it found.
fn source_digest(manifest: &Path) -> Result<String, PolicyCliError> {
    match super::block_on(load::policy(manifest, None, None, None)) {
        Ok(file) => Ok(file.prepared.digest),
        Err(PolicyCliError::DigestMismatch { actual, .. }) => Ok(actual),
        Err(error) => Err(error),
    }
}

/// `text` with the value of its one `sha256:` key replaced by `digest`, quoted as given.
fn with_pin(text: &str, digest: &str) -> Result<String, String> {
    let is_pin = |line: &str| line.trim_start().starts_with("sha256:");
    let count = text.lines().filter(|l| is_pin(l)).count();
    if count != 1 {
        return Err(format!(
            "expected one `sha256:` line (spec.wasm.sha256), found {count}"
        ));
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if is_pin(line) {
            let indent = &line[..line.len() - line.trim_start().len()];
            let ending = if line.ends_with('\n') { "\n" } else { "" };
            let value = line.trim_start()["sha256:".len()..].trim();
            let comment = value.find(" #").map(|at| &value[at..]).unwrap_or("");
            out.push_str(&format!("{indent}sha256: \"{digest}\"{comment}{ending}"));
        } else {
            out.push_str(line);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pin_line_changes() {
        let text = "# my policy\nspec:\n  wasm:\n    url: https://example.test/p.wasm  # built by CI\n    sha256: \"0000\"  # placeholder\n  failurePolicy: Ignore\n";
        let written = with_pin(text, "ab12").expect("pin");
        assert_eq!(
            written,
            "# my policy\nspec:\n  wasm:\n    url: https://example.test/p.wasm  # built by CI\n    sha256: \"ab12\" # placeholder\n  failurePolicy: Ignore\n"
        );
    }

    #[test]
    fn two_pins_are_not_guessed_between() {
        assert!(with_pin("sha256: a\nsha256: b\n", "c").is_err());
        assert!(with_pin("spec: {}\n", "c").is_err());
    }
}
