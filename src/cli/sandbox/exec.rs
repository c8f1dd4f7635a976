//! `sandman sandbox exec`: a command in a Sandbox, its output streamed back as it comes, its
//! exit code passed through; with `-i` local stdin goes to it, with `-t` it runs on a PTY.

use std::io::IsTerminal;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SandboxError;
use super::client::{Connection, Runtime};

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The Sandbox, as `namespace/name`.
    sandbox: String,
    #[command(flatten)]
    connection: Connection,
    /// Send this terminal's input to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Run the command on a PTY (with -i implied), sized as this terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Start the command and return at once, printing its pid; `sandman sandbox logs` follows it.
    #[arg(short = 'd', long)]
    detach: bool,
    /// A name to find the command by later (`sandman sandbox logs --tag`).
    #[arg(long)]
    tag: Option<String>,
    /// Kill the command after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// The working directory (default: the container user's home).
    #[arg(long)]
    cwd: Option<String>,
    /// Extra environment, `NAME=value`, repeatable.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs the command and gives its exit code.
pub async fn run(args: ExecArgs) -> Result<i32, SandboxError> {
    let runtime = super::client::connect(&args.connection, &args.sandbox).await?;
    let mut envs = serde_json::Map::new();
    for pair in &args.env {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| SandboxError::Usage(format!("-e {pair:?}: write NAME=value")))?;
        envs.insert(name.into(), value.into());
    }
    let (cmd, rest) = args
        .command
        .split_first()
        .ok_or_else(|| SandboxError::Usage("no command".into()))?;
    let interactive = args.stdin || args.tty;
    let mut start = serde_json::json!({
        "process": { "cmd": cmd, "args": rest, "envs": envs },
        "stdin": interactive && !args.tty,
    });
    if let Some(cwd) = &args.cwd {
        start["process"]["cwd"] = cwd.clone().into();
    }
    if let Some(tag) = &args.tag {
        start["tag"] = tag.clone().into();
    }
    if args.tty {
        let (cols, rows) = terminal_size();
        start["pty"] = serde_json::json!({ "size": { "cols": cols, "rows": rows } });
    }
    let timeout_ms = args.timeout.map(|s| s.saturating_mul(1000));
    let mut stream = runtime
        .stream("process.Process/Start", start, timeout_ms)
        .await?;
    let pid = match stream.next().await? {
        Some(first) => first["event"]["start"]["pid"].as_u64().ok_or_else(|| {
            SandboxError::Gateway(format!("the runtime did not start the command: {first}"))
        })?,
        None => return Err(SandboxError::Gateway("the command did not start".into())),
    };
    if args.detach {
        println!("{pid}");
        return Ok(0);
    }
    let runtime = std::sync::Arc::new(runtime);
    let _raw = args.tty.then(RawMode::enter).flatten();
    let input = interactive.then(|| tokio::spawn(pump_stdin(runtime.clone(), pid, args.tty)));
    let resize = args
        .tty
        .then(|| tokio::spawn(follow_resizes(runtime.clone(), pid)));
    let code = print_output(&mut stream).await;
    for task in [input, resize].into_iter().flatten() {
        task.abort();
    }
    code
}

/// Writes the command's output where it belongs until it ends; its exit code.
pub async fn print_output(stream: &mut super::client::Stream) -> Result<i32, SandboxError> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut code = None;
    while let Some(message) = stream.next().await? {
        let event = &message["event"];
        for (kind, err) in [("stdout", false), ("pty", false), ("stderr", true)] {
            if let Some(text) = event["data"][kind].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .unwrap_or_default();
                let written = if err {
                    stderr.write_all(&bytes).await.and(stderr.flush().await)
                } else {
                    stdout.write_all(&bytes).await.and(stdout.flush().await)
                };
                written.map_err(|e| SandboxError::Usage(format!("write output: {e}")))?;
            }
        }
        if let Some(end) = event.get("end") {
            let exit = end["exitCode"].as_i64().unwrap_or(0);
            // A command killed by a signal exits as a shell reports it: 128 + the signal.
            let signalled = end["status"]
                .as_str()
                .and_then(|s| s.strip_prefix("signal: "));
            code = Some(match signalled {
                Some("killed") => 137,
                Some("terminated") => 143,
                Some(_) => 128,
                None => i32::try_from(exit).unwrap_or(1),
            });
        }
    }
    Ok(code.unwrap_or(0))
}

async fn pump_stdin(runtime: std::sync::Arc<Runtime>, pid: u64, tty: bool) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 32 << 10];
    let kind = if tty { "pty" } else { "stdin" };
    while let Ok(n) = stdin.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        let data = base64::engine::general_purpose::STANDARD.encode(&buffer[..n]);
        let message = serde_json::json!({ "process": { "pid": pid }, "input": { kind: data } });
        if runtime
            .unary("process.Process/SendInput", message)
            .await
            .is_err()
        {
            return;
        }
    }
    if !tty {
        let message = serde_json::json!({ "process": { "pid": pid } });
        let _ = runtime.unary("process.Process/CloseStdin", message).await;
    }
}

async fn follow_resizes(runtime: std::sync::Arc<Runtime>, pid: u64) {
    let Ok(mut changes) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
        return;
    };
    while changes.recv().await.is_some() {
        let (cols, rows) = terminal_size();
        let message = serde_json::json!({
            "process": { "pid": pid },
            "pty": { "size": { "cols": cols, "rows": rows } },
        });
        let _ = runtime.unary("process.Process/Update", message).await;
    }
}

/// This terminal's size, or 80×24 when stdout is not one.
fn terminal_size() -> (u16, u16) {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .filter(|s| s.ws_col > 0 && s.ws_row > 0)
        .map_or((80, 24), |s| (s.ws_col, s.ws_row))
}

/// The local terminal in raw mode while a PTY command runs, restored when dropped, so keys
/// such as Ctrl-C reach the command rather than end the CLI.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}
