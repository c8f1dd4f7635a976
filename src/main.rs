use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sandman::cli::Cli::parse();
    match sandman::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A command run in a Sandbox ended with this code: it is the CLI's, without a word.
        Err(sandman::cli::CliError::Exit(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("sandman: {e}");
            ExitCode::FAILURE
        }
    }
}
