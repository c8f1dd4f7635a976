//! `sandman-runtime`: the in-Sandbox runtime. It serves E2B's envd protocol on the Sandbox's
//! runtime port, for callers that hold the Sandbox's token, and, given a command after `--`,
//! runs it as the container's main process.

mod agent;
mod bridge;
mod files;
mod http;
mod process;
mod server;
mod state;
mod users;

use std::sync::Arc;

use clap::Parser;

/// The variable the operator sets from the Sandbox's token Secret. The runtime keeps it out of
/// every command's environment.
const TOKEN_VARIABLE: &str = "SANDMAN_RUNTIME_TOKEN";

#[derive(Parser)]
#[command(version, about = "sandman's in-Sandbox runtime (E2B envd protocol)")]
struct Args {
    /// Where to listen. 49983 is envd's port, which the E2B SDKs name.
    #[arg(long, default_value = "0.0.0.0:49983")]
    listen: std::net::SocketAddr,
    /// A file holding the access token, instead of $SANDMAN_RUNTIME_TOKEN.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Serve nothing: carry one connection to this port of 127.0.0.1 over stdin and stdout
    /// (what the checkpoint supervisor runs inside the agent's sandbox for each connection).
    #[arg(long, value_name = "PORT", conflicts_with_all = ["command", "token_file"])]
    bridge: Option<u16>,
    /// The container's own command, run as the runtime's child; the container ends with it.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(port) = args.bridge {
        return match bridge::bridge(port) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sandman-runtime: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("sandman-runtime: {e}");
            std::process::ExitCode::from(125)
        }
    }
}

fn run(args: Args) -> Result<i32, String> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("token file {}: {e}", path.display()))?
            .trim()
            .to_string(),
        None => std::env::var(TOKEN_VARIABLE).unwrap_or_default(),
    };
    if token.is_empty() {
        return Err(format!(
            "no access token: set ${TOKEN_VARIABLE} or --token-file; the runtime never serves without one"
        ));
    }
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name != TOKEN_VARIABLE)
        .collect();
    // One thread for the protocol keeps the idle runtime small; file-system work goes to
    // the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("listen on {}: {e}", args.listen))?;
        let processes = Arc::new(process::Table::default());
        let state = Arc::new(state::State {
            token,
            user: users::current(),
            env: env.clone(),
            processes: processes.clone(),
            watchers: Arc::new(files::Watchers::default()),
        });
        let server = tokio::spawn(server::serve(listener, state));
        if args.command.is_empty() {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| e.to_string())?;
            tokio::select! {
                served = server => match served {
                    Ok(Ok(())) => Ok(0),
                    Ok(Err(e)) => Err(format!("serve: {e}")),
                    Err(e) => Err(format!("serve: {e}")),
                },
                _ = terminate.recv() => Ok(0),
            }
        } else {
            let agent = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let reaper_agent = agent.clone();
            tokio::spawn(agent::reap_orphans(move |pid| {
                pid == reaper_agent.load(std::sync::atomic::Ordering::Relaxed)
                    || processes.list().iter().any(|p| p.pid == pid)
            }));
            agent::run(&args.command, &env, &agent)
                .await
                .map_err(|e| e.to_string())
        }
    })
}
