//! Driving `runsc` (gVisor) for one agent container: an OCI bundle, and run, checkpoint,
//! restore, exec and removal through its command line, each bounded in time.

use sandman_oci_bundle as oci;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::CheckpointError;

/// How long a `runsc` command other than checkpoint and restore may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One bind mount into the agent's container (a Sandbox volume, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
}

impl std::str::FromStr for Mount {
    type Err = String;

    /// `SOURCE:DESTINATION`, both absolute.
    fn from_str(s: &str) -> Result<Self, String> {
        let (source, destination) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected SOURCE:DESTINATION"))?;
        if !source.starts_with('/') || !destination.starts_with('/') {
            return Err(format!("{s:?}: both paths must be absolute"));
        }
        Ok(Self {
            source: source.into(),
            destination: destination.into(),
        })
    }
}

/// `runsc` with one state root, platform and network mode.
#[derive(Debug, Clone)]
pub struct Runsc {
    pub binary: PathBuf,
    /// runsc's state directory (not on the volume: it holds live sandboxes, not images).
    pub root: PathBuf,
    /// `ptrace` works everywhere; `systrap` or `kvm` are faster where the runsc has them.
    pub platform: String,
    /// Extra flags for `runsc checkpoint` and `runsc restore` (a current runsc takes
    /// `--compression=none`, `--direct` and `--background`; Debian's 2022 one none of them).
    pub checkpoint_flags: Vec<String>,
    pub restore_flags: Vec<String>,
}

impl Runsc {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--root")
            .arg(&self.root)
            .arg(format!("--platform={}", self.platform))
            // The agent's network is gVisor's own loopback: it saves and restores with the
            // rest of the sandbox, which a host network would not.
            .arg("--network=none")
            // The supervisor's container's cgroup bounds the sandbox; in a user-namespaced
            // pod runsc could not write cgroups anyway.
            .arg("--ignore-cgroups")
            // The agent's root is its image, read-only: what the agent writes there lands in
            // gVisor's memory (and so in the checkpoint), not in a file store beside the image,
            // which a read-only image cannot hold.
            .arg("--overlay2=root:memory")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn output(
        &self,
        what: &str,
        mut command: Command,
        timeout: Duration,
    ) -> Result<String, CheckpointError> {
        let failed = |message: String| CheckpointError::Runsc {
            command: what.to_string(),
            message,
        };
        let output = tokio::time::timeout(timeout, command.output())
            .await
            .map_err(|_| failed(format!("no answer within {timeout:?}")))?
            .map_err(|e| failed(format!("cannot run {}: {e}", self.binary.display())))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            Err(failed(format!("{}: {last}", output.status)))
        }
    }

    /// Starts container `id` from `bundle`, detached; its output goes to `log`.
    pub async fn run(&self, bundle: &Path, id: &str, log: &Path) -> Result<(), CheckpointError> {
        let mut command = self.command();
        command
            .arg("run")
            .arg("-bundle")
            .arg(bundle)
            .arg("-detach")
            .arg(id);
        self.detached("run", command, log, COMMAND_TIMEOUT).await
    }

    /// Starts container `id` from the image in `image`, detached (restore creates it; there
    /// is no `create` before it).
    pub async fn restore(
        &self,
        bundle: &Path,
        id: &str,
        image: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<(), CheckpointError> {
        let mut command = self.command();
        command
            .arg("restore")
            .args(&self.restore_flags)
            .arg("-bundle")
            .arg(bundle)
            .arg("-detach")
            .arg("--image-path")
            .arg(image)
            .arg(id);
        self.detached("restore", command, log, timeout).await
    }

    /// A detached container keeps the stdio it was started with open for as long as it runs:
    /// never a pipe of ours, or the command would not return.
    async fn detached(
        &self,
        what: &str,
        mut command: Command,
        log: &Path,
        timeout: Duration,
    ) -> Result<(), CheckpointError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(CheckpointError::io(format!("open {}", log.display())))?;
        let err = file
            .try_clone()
            .map_err(CheckpointError::io(format!("open {}", log.display())))?;
        command.stdout(file).stderr(err);
        let status = tokio::time::timeout(timeout, command.status())
            .await
            .map_err(|_| CheckpointError::Runsc {
                command: what.into(),
                message: format!("no answer within {timeout:?}"),
            })?
            .map_err(|e| CheckpointError::Runsc {
                command: what.into(),
                message: format!("cannot run {}: {e}", self.binary.display()),
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(CheckpointError::Runsc {
                command: what.into(),
                message: format!("{status}: {}", last_line(log)),
            })
        }
    }

    /// Writes container `id`'s memory and state into `image`; the container stops.
    pub async fn checkpoint(
        &self,
        id: &str,
        image: &Path,
        timeout: Duration,
    ) -> Result<(), CheckpointError> {
        let mut command = self.command();
        command
            .arg("checkpoint")
            .args(&self.checkpoint_flags)
            .arg("--image-path")
            .arg(image)
            .arg(id);
        self.output("checkpoint", command, timeout).await.map(drop)
    }

    /// The container's status as runsc reports it.
    pub async fn status(&self, id: &str) -> Result<oci::ContainerState, CheckpointError> {
        let mut command = self.command();
        command.arg("state").arg(id);
        let out = self.output("state", command, COMMAND_TIMEOUT).await?;
        oci::status_of(out.as_bytes()).ok_or_else(|| CheckpointError::Runsc {
            command: "state".into(),
            message: format!("unreadable answer: {}", crate::text::one_line(&out)),
        })
    }

    /// A command run inside container `id`, its stdio piped to the caller.
    pub fn exec(&self, id: &str, args: &[String]) -> Command {
        let mut command = self.command();
        command
            .arg("exec")
            .arg(id)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    }

    /// Kills and removes container `id`, whatever state it is in. Blocking, so that it also
    /// runs from `Drop`.
    pub fn remove(&self, id: &str) {
        let base = |args: &[&str]| {
            let mut command = std::process::Command::new(&self.binary);
            command
                .arg("--root")
                .arg(&self.root)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            command
        };
        let _ = base(&["kill", id, "KILL"]).status();
        let _ = base(&["delete", "--force", id]).status();
    }
}

fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

/// Writes an OCI bundle for the agent: `rootfs` as its root (writable through gVisor's
/// gofer), `args` as its process, a memory-backed `/tmp`, and `mounts`. The process has no
/// capabilities beyond gVisor's defaults for an unprivileged container.
pub fn write_bundle(
    bundle: &Path,
    rootfs: &Path,
    args: &[String],
    env: &[String],
    cwd: &str,
    mounts: &[Mount],
) -> Result<(), CheckpointError> {
    let mut all_mounts = vec![
        oci::Mount::special("proc", "/proc", &[]),
        oci::Mount::special("tmpfs", "/dev", &[]),
        oci::Mount::special("sysfs", "/sys", &["nosuid", "noexec", "nodev", "ro"]),
        oci::Mount::special("tmpfs", "/tmp", &[]),
    ];
    all_mounts.extend(
        mounts
            .iter()
            .map(|m| oci::Mount::bind(&m.source, &m.destination)),
    );
    let mut environment = vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()];
    environment.extend(env.iter().cloned());
    let spec = oci::Bundle {
        rootfs: rootfs.to_path_buf(),
        readonly_root: false,
        args: args.to_vec(),
        env: environment,
        cwd: if cwd.is_empty() { "/" } else { cwd }.into(),
        uid: 0,
        gid: 0,
        capabilities: vec!["CAP_KILL".into(), "CAP_NET_BIND_SERVICE".into()],
        no_new_privileges: true,
        hostname: "sandbox".into(),
        mounts: all_mounts,
        network_namespace: None,
        masked_paths: Vec::new(),
        // The supervisor's pod has a user namespace of its own already; gVisor's sandbox is
        // the agent's boundary inside it.
        user_namespace: None,
    };
    spec.write(bundle)
        .map(drop)
        .map_err(|e| CheckpointError::Invalid(e.to_string()))
}
