//! The container's own command, which the runtime wraps: it runs as the runtime's child with
//! the container's stdio, gets the runtime's SIGTERM, and its exit is the container's.
//! Wrapping makes the runtime PID 1, so it also reaps orphans, as an init must.

use std::time::Duration;

/// Runs `command` to its end and gives the exit code the container should have.
pub async fn run(
    command: &[String],
    env: &[(String, String)],
    pid: &std::sync::atomic::AtomicU32,
) -> std::io::Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command to run"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .map_err(|e| std::io::Error::other(format!("start {program}: {e}")))?;
    pid.store(
        child.id().unwrap_or_default(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = terminate.recv() => {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// As PID 1, collects the exit of processes that lost their parent, so they do not stay
/// zombies. Only zombies whose parent is the runtime and that are not its own tracked
/// children (`keep`) are collected, by pid, so no tracked child's status is taken.
pub async fn reap_orphans(keep: impl Fn(u32) -> bool) {
    if rustix::process::getpid().as_raw_nonzero().get() != 1 {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticks.tick().await;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if keep(pid) || !is_orphaned_zombie(pid) {
                continue;
            }
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
            }
        }
    }
}

fn is_orphaned_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name may hold spaces and parentheses; the fields after its last ')' do not.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields.first() == Some(&"Z") && fields.get(1) == Some(&"1")
}
