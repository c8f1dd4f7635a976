use std::process::ExitCode;

use clap::Parser;

// jemalloc rather than the system's malloc: with 10,000 Sandboxes cached, glibc's kept about
// twice the operator's live heap resident (BENCHMARKS.md, "Ten thousand Sandboxes"), and
// musl's, in the static image, is slow under many threads.
#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads from this symbol when it starts (`_RJEM_MALLOC_CONF` in
/// the environment still overrides them). Each keeps less freed memory resident, which is most
/// of what a launch of thousands of Sandboxes leaves behind (watch events, request bodies):
/// - `narenas:2`: the default is four per CPU, each with its own free pages, for a process
///   whose work is a few async threads;
/// - `dirty_decay_ms:1000`, `muzzy_decay_ms:0`: freed pages go back to the kernel after about
///   a second, rather than ten, and at once rather than lazily (lazily freed pages still count
///   as resident until the kernel wants them);
/// - `background_thread:true`: that happens on time even while the operator is idle and
///   allocates nothing.
///
/// Peak RSS at 10,000 Sandboxes went from 123.4 to 113.4 MiB (BENCHMARKS.md).
///
/// `unsafe` because an exported name could clash with another library's; this one is
/// jemalloc's own hook, which nothing else defines.
#[cfg(all(target_os = "linux", feature = "jemalloc"))]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 70] =
    b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true\0";

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
