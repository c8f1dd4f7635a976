//! The runtime's table of running commands, and how one is started: as a pipe-connected child
//! or on a PTY, as the caller's user, with its output pumped to its followers.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::running::{CHUNK, Input, Running, chunk};
use super::wire::{Data, End, Selector, StartRequest};
use crate::users::User;
use sandman_connect::{Code, RpcError};

/// At most this many commands run at once; a caller that starts more gets
/// `resource_exhausted`, not a runtime out of file descriptors.
pub const MAX_PROCESSES: usize = 512;

/// After a command exits, how long its output pipes may stay open (held by something it left
/// running in the background) before its stream ends anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Table {
    running: Mutex<HashMap<u32, Arc<Running>>>,
}

/// What a command inherits besides what its request names.
pub struct Inherited<'a> {
    pub env: &'a [(String, String)],
    pub user: &'a User,
}

impl Table {
    pub fn list(&self) -> Vec<Arc<Running>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|p| p.pid);
        all
    }

    pub fn find(&self, selector: &Selector) -> Result<Arc<Running>, RpcError> {
        let running = self.lock();
        let found = match (&selector.pid, &selector.tag) {
            (Some(pid), _) => running.get(pid).cloned(),
            (None, Some(tag)) => running
                .values()
                .find(|p| p.tag.as_deref() == Some(tag))
                .cloned(),
            (None, None) => {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    "the process selector names neither a pid nor a tag",
                ));
            }
        };
        found.ok_or_else(|| {
            RpcError::new(
                Code::NotFound,
                format!("no running process matches {selector:?}"),
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Running>>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks a `Start` request against the limits and the file system, and gives the
    /// command's working directory.
    fn admit(&self, request: &StartRequest, user: &User) -> Result<std::path::PathBuf, RpcError> {
        if self.lock().len() >= MAX_PROCESSES {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("{MAX_PROCESSES} commands are running already"),
            ));
        }
        if let Some(tag) = &request.tag
            && self.lock().values().any(|p| p.tag.as_ref() == Some(tag))
        {
            return Err(RpcError::new(
                Code::AlreadyExists,
                format!("a running process has the tag {tag:?}"),
            ));
        }
        let config = &request.process;
        if config.cmd.is_empty() {
            return Err(RpcError::new(Code::InvalidArgument, "process.cmd is empty"));
        }
        let cwd = config
            .cwd
            .as_deref()
            .map(|c| crate::files::path::resolve(c, &user.home))
            .unwrap_or_else(|| user.home.clone());
        if !cwd.is_dir() {
            return Err(RpcError::new(
                Code::InvalidArgument,
                format!("the working directory {} is not a directory", cwd.display()),
            ));
        }
        Ok(cwd)
    }

    /// Starts the command a `Start` request describes and returns it, already followed by
    /// `follower`'s stream so none of its output is missed.
    pub fn start(
        self: &Arc<Self>,
        request: StartRequest,
        inherited: Inherited<'_>,
    ) -> Result<
        (
            Arc<Running>,
            tokio::sync::mpsc::Receiver<super::wire::Event>,
        ),
        RpcError,
    > {
        let user = inherited.user;
        let cwd = self.admit(&request, user)?;
        let config = request.process.clone();
        let mut env: Vec<(String, String)> = inherited.env.to_vec();
        env.push(("HOME".into(), user.home.display().to_string()));
        env.push(("USER".into(), user.name.clone()));
        env.extend(config.envs.clone());
        let started = match &request.pty {
            Some(pty) => spawn_on_pty(&config.cmd, &config.args, &env, &cwd, user, pty.size),
            None => spawn_piped(
                &config.cmd,
                &config.args,
                &env,
                &cwd,
                user,
                request.stdin == Some(true),
            ),
        }
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("start {}: {e}", config.cmd)))?;
        let Spawned {
            mut child,
            input,
            outputs,
        } = started;
        let pid = child.id().unwrap_or_default();
        let running = Arc::new(Running::new(pid, request.tag, config, input));
        let follower = running.follow();
        self.lock().insert(pid, running.clone());
        let table = self.clone();
        let process = running.clone();
        tokio::spawn(async move {
            let pumps: Vec<_> = outputs
                .into_iter()
                .map(|(reader, kind)| tokio::spawn(pump(process.clone(), reader, kind)))
                .collect();
            let status = child.wait().await;
            let drained = futures::future::join_all(pumps);
            if tokio::time::timeout(DRAIN_AFTER_EXIT, drained)
                .await
                .is_err()
            {
                // Something the command left running holds its output open; its stream ends
                // with the command, as a shell's would.
            }
            table.lock().remove(&process.pid);
            process.finish(end_of(status));
        });
        Ok((running, follower))
    }
}

/// One of a command's outputs, and which kind of data it carries.
type Output = (Box<dyn AsyncRead + Send + Unpin>, fn(bytes::Bytes) -> Data);

struct Spawned {
    child: tokio::process::Child,
    input: Option<Input>,
    outputs: Vec<Output>,
}

fn spawn_piped(
    cmd: &str,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    user: &User,
    stdin: bool,
) -> std::io::Result<Spawned> {
    let mut command = tokio::process::Command::new(cmd);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if user.uid != rustix::process::getuid().as_raw() {
        command.uid(user.uid).gid(user.gid);
    }
    let mut child = command.spawn()?;
    let input = child.stdin.take().map(Input::Pipe);
    let mut outputs: Vec<Output> = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        outputs.push((Box::new(stdout), Data::Stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        outputs.push((Box::new(stderr), Data::Stderr));
    }
    Ok(Spawned {
        child,
        input,
        outputs,
    })
}

fn spawn_on_pty(
    cmd: &str,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    user: &User,
    size: super::wire::Size,
) -> std::io::Result<Spawned> {
    let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
    let rows = u16::try_from(size.rows.max(1)).unwrap_or(u16::MAX);
    let cols = u16::try_from(size.cols.max(1)).unwrap_or(u16::MAX);
    pty.resize(pty_process::Size::new(rows, cols))
        .map_err(std::io::Error::other)?;
    let mut command = pty_process::Command::new(cmd)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("TERM", "xterm-256color")
        .current_dir(cwd);
    if user.uid != rustix::process::getuid().as_raw() {
        command = command.uid(user.uid).gid(user.gid);
    }
    let child = command.spawn(pts).map_err(std::io::Error::other)?;
    let (reader, writer) = pty.into_split();
    Ok(Spawned {
        child,
        input: Some(Input::Pty(writer)),
        outputs: vec![(Box::new(reader), Data::Pty)],
    })
}

async fn pump(
    process: Arc<Running>,
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    kind: fn(bytes::Bytes) -> Data,
) {
    let mut buffer = vec![0u8; CHUNK];
    // A PTY's reader fails with EIO once the last writer closes: that is its end of file.
    while let Ok(n) = reader.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        process.publish(kind(chunk(&buffer[..n]))).await;
    }
}

fn end_of(status: std::io::Result<std::process::ExitStatus>) -> End {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => End {
                exit_code: code,
                exited: true,
                status: format!("exit status {code}"),
                error: None,
            },
            (None, Some(signal)) => End {
                exit_code: -1,
                exited: false,
                status: format!("signal: {}", signal_name(signal)),
                error: None,
            },
            (None, None) => End {
                exit_code: -1,
                exited: false,
                status: status.to_string(),
                error: None,
            },
        },
        Err(e) => End {
            exit_code: -1,
            exited: false,
            status: "unknown".into(),
            error: Some(format!("waiting for the process: {e}")),
        },
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        9 => "killed",
        15 => "terminated",
        2 => "interrupt",
        1 => "hangup",
        13 => "broken pipe",
        6 => "aborted",
        11 => "segmentation fault",
        _ => "other",
    }
}
