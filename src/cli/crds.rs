use super::CliError;

pub fn print() -> Result<(), CliError> {
    print!("{}", crate::api::crds_yaml()?);
    Ok(())
}
