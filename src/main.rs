use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sandman::cli::Cli::parse();
    match sandman::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandman: {e}");
            ExitCode::FAILURE
        }
    }
}
