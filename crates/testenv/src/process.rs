//! Starting control-plane processes with their output in log files, and stopping them again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::Error;

/// How long a started process may outlive the process that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed by the kernel (`PR_SET_PDEATHSIG`) when the starting process exits for any reason,
    /// including a panic or SIGKILL. Used by tests.
    TiedToParent,
    /// In a session of its own, kept until `testenv down`. Used by the `testenv up` command.
    Detached,
}

/// A started process.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub name: String,
    pub pid: u32,
    pub binary: PathBuf,
    pub log: PathBuf,
    /// What it was started with, so that it can be started again (recorded processes have
    /// none).
    args: Vec<String>,
    lifetime: Lifetime,
    child: Option<Child>,
}

impl Spawned {
    /// `Some(status)` when the process has already exited.
    pub(crate) fn exit_status(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("unknown ({e})")),
            },
            None => (!is_alive(self.pid, &self.binary)).then(|| "gone".to_string()),
        }
    }

    pub(crate) fn stop(&mut self) {
        match &mut self.child {
            Some(child) => {
                terminate(self.pid, &self.binary, Duration::from_secs(5));
                let _ = child.kill();
                let _ = child.wait();
            }
            None => terminate(self.pid, &self.binary, Duration::from_secs(10)),
        }
    }
}

pub(crate) fn spawn(
    name: &str,
    binary: &Path,
    args: &[String],
    log: &Path,
    lifetime: Lifetime,
) -> Result<Spawned, Error> {
    // Appended to, so that a restarted process's log follows its first life's.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io(format!("create {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(Error::io(format!("reopen {}", log.display())))?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let child = match lifetime {
        Lifetime::TiedToParent => spawn_tied(command)?,
        Lifetime::Detached => spawn_detached(command)?,
    };
    let pid = child.id();
    // A detached child is reaped by init once `testenv up` exits; dropping its handle is what
    // lets it outlive us.
    let child = (lifetime == Lifetime::TiedToParent).then_some(child);
    Ok(Spawned {
        name: name.to_string(),
        pid,
        binary: binary.to_path_buf(),
        log: log.to_path_buf(),
        args: args.to_vec(),
        lifetime,
        child,
    })
}

fn spawn_detached(mut command: Command) -> Result<Child, Error> {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(Error::io(format!("start {:?}", command.get_program())))
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. A
/// test thread is short-lived, so every tied child is forked from one thread that never exits.
fn spawn_tied(mut command: Command) -> Result<Child, Error> {
    use std::os::unix::process::CommandExt;
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                loop {
                    std::thread::park();
                }
            })
            .map(|_| ())
            .unwrap_or(());
        Mutex::new(tx)
    });
    let program = format!("{:?}", command.get_program());
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .map_err(|_| Error::State("spawner lock poisoned".into()))?
        .send((command, reply_tx))
        .map_err(|_| Error::State("spawner thread is gone".into()))?;
    reply_rx
        .recv()
        .map_err(|_| Error::State("spawner thread is gone".into()))?
        .map_err(Error::io(format!("start {program}")))
}

/// True when `pid` runs `binary`: a recycled pid of some other program is never touched.
pub(crate) fn is_alive(pid: u32, binary: &Path) -> bool {
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => {
            let exe = exe.to_string_lossy();
            let exe = exe.trim_end_matches(" (deleted)");
            let wanted = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
            Path::new(exe) == wanted
        }
        Err(_) => false,
    }
}

/// SIGTERM, then SIGKILL after `grace`, and only if `pid` still runs `binary`.
fn terminate(pid: u32, binary: &Path, grace: Duration) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if !is_alive(pid, binary) {
        return;
    }
    // SAFETY: plain syscalls on a pid we checked runs our binary.
    unsafe {
        libc::kill(raw, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_alive(pid, binary) || is_zombie(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if is_alive(pid, binary) {
        // SAFETY: as above.
        unsafe {
            libc::kill(raw, libc::SIGKILL);
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The last `lines` lines of a log file, for a failing test's output.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Spawned {
    /// A process started by an earlier `testenv up`, known only by its recorded pid.
    pub(crate) fn recorded(name: &str, pid: u32, binary: &Path, log: &Path) -> Self {
        Self {
            name: name.to_string(),
            pid,
            binary: binary.to_path_buf(),
            log: log.to_path_buf(),
            args: Vec::new(),
            lifetime: Lifetime::Detached,
            child: None,
        }
    }

    /// Kills it at once (SIGKILL, as a crash would) and starts the same command again.
    pub(crate) fn restart(&mut self) -> Result<(), Error> {
        if self.args.is_empty() {
            return Err(Error::State(format!(
                "{} was not started here: it cannot be restarted",
                self.name
            )));
        }
        match &mut self.child {
            Some(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => signal(self.pid, libc::SIGKILL),
        }
        *self = spawn(
            &self.name,
            &self.binary,
            &self.args,
            &self.log,
            self.lifetime,
        )?;
        Ok(())
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) it: a process that is alive and answers
    /// nothing, as a host under memory pressure or a long GC pause makes it.
    pub(crate) fn pause(&self, paused: bool) {
        signal(self.pid, if paused { libc::SIGSTOP } else { libc::SIGCONT });
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a pid this module started; it touches no memory.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}
