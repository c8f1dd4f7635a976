use std::process::ExitCode;

use clap::Parser;

// jemalloc rather than the system's malloc: with 10,000 Sandboxes cached, glibc's kept about
// twice the operator's live heap resident (BENCHMARKS.md, "Ten thousand Sandboxes"), and
// musl's, in the static image, is slow under many threads.
#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
