//! `testenv`: start, inspect and stop sandman's local control plane.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use sandman_testenv::{ControlPlane, Lifetime, Options, RunningState, cache_root};

#[derive(Parser)]
#[command(
    name = "testenv",
    about = "A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) on loopback"
)]
struct Cli {
    /// Where the running control plane keeps its certificates, data, logs and state.
    #[arg(long, global = true, env = "SANDMAN_TESTENV_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the control plane in the background (builds the binaries on first use).
    Up {
        /// Fake nodes for kwok to manage.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Directory of CRD YAML files to install.
        #[arg(long)]
        crds: Option<PathBuf>,
        /// Real nodes beside them, whose pods run as real runc and gVisor containers
        /// (`real_node.rs`; needs root, runc, runsc and busybox-static).
        #[arg(long, default_value_t = 0)]
        real_nodes: usize,
        /// A `sandman` binary: the real nodes lay out the checkpoint supervisor's image from it
        /// and the pinned runsc, and load it as `sandman.dev/supervisor:test`.
        #[arg(long, requires = "real_nodes")]
        supervisor: Option<PathBuf>,
    },
    /// Run real node `index` until SIGTERM (what `up --real-nodes` starts).
    #[command(hide = true)]
    RealNode {
        #[arg(long)]
        index: usize,
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Its containers' state, volumes and root file system.
        #[arg(long)]
        node_dir: PathBuf,
        #[arg(long)]
        supervisor: Option<PathBuf>,
    },
    /// Stop every process that `up` started, and nothing else.
    Down,
    /// Say whether a control plane is running, and where.
    Status,
    /// Print the path of the admin kubeconfig.
    Kubeconfig,
    /// Build (or find) the binaries, helm included, and print `<name> <path>` for each.
    Build,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = cli
        .dir
        .unwrap_or_else(|| cache_root().join("testenv").join("cluster"));
    match run(cli.command, dir) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, dir: PathBuf) -> Result<ExitCode, sandman_testenv::Error> {
    match command {
        Command::Up {
            nodes,
            crds,
            real_nodes,
            supervisor,
        } => up(&dir, nodes, crds, real_nodes, supervisor.as_deref()),
        Command::RealNode {
            index,
            kubeconfig,
            node_dir,
            supervisor,
        } => {
            sandman_testenv::real_node::serve(index, &kubeconfig, &node_dir, supervisor.as_deref())
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Down => {
            let state = sandman_testenv::stop_recorded(&dir)?;
            println!("stopped {} processes", state.processes.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => status(&dir),
        Command::Kubeconfig => {
            let state = RunningState::load(&dir)?
                .ok_or_else(|| sandman_testenv::Error::NotRunning(dir.clone()))?;
            println!("{}", state.kubeconfig.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Build => build(),
    }
}

/// `testenv up`: a detached control plane in `dir`, and its real nodes.
fn up(
    dir: &Path,
    nodes: usize,
    crds: Option<PathBuf>,
    real_nodes: usize,
    supervisor: Option<&Path>,
) -> Result<ExitCode, sandman_testenv::Error> {
    if let Some(state) = RunningState::load(dir)?
        && !state.alive().is_empty()
    {
        println!(
            "a control plane is already running at {} (kubeconfig {}); not starting another",
            state.server,
            state.kubeconfig.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // A stale directory from a crashed run holds old etcd data and certificates.
    let _ = std::fs::remove_dir_all(dir);
    let mut options = Options::new(dir);
    options.nodes = nodes;
    options.lifetime = Lifetime::Detached;
    options.crds_dir = crds;
    let started = Instant::now();
    let mut plane = ControlPlane::start(&options)?;
    let me = std::env::current_exe().map_err(|source| sandman_testenv::Error::Io {
        context: "find the testenv binary".into(),
        source,
    })?;
    // A relative path would be read from the node's own working directory.
    let supervisor = supervisor
        .map(|path| {
            std::fs::canonicalize(path).map_err(|source| sandman_testenv::Error::Io {
                context: format!("find the supervisor's sandman {}", path.display()),
                source,
            })
        })
        .transpose()?;
    let nodes_dir = real_nodes_dir(dir);
    if real_nodes > 0 {
        let _ = std::fs::remove_dir_all(&nodes_dir);
        std::fs::create_dir_all(&nodes_dir).map_err(|source| sandman_testenv::Error::Io {
            context: format!("create {}", nodes_dir.display()),
            source,
        })?;
    }
    for index in 0..real_nodes {
        let kubeconfig = plane.kubeconfig().display().to_string();
        let node_dir = nodes_dir
            .join(format!("real-node-{index}"))
            .display()
            .to_string();
        let mut args = vec![
            "real-node".into(),
            format!("--index={index}"),
            format!("--kubeconfig={kubeconfig}"),
            format!("--node-dir={node_dir}"),
        ];
        if let Some(sandman) = &supervisor {
            args.push(format!("--supervisor={}", sandman.display()));
        }
        plane.add_process(&format!("real-node-{index}"), &me, args, Lifetime::Detached)?;
    }
    println!(
        "API ready in {:.2}s; control plane ready at {} in {:.2}s\nkubeconfig: {}\nlogs: {}",
        plane.api_ready_after().as_secs_f64(),
        plane.server(),
        started.elapsed().as_secs_f64(),
        plane.kubeconfig().display(),
        dir.join("logs").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Where the real nodes of the control plane in `dir` keep their containers, images and
/// volumes: under the system's temporary directory, not under `dir`, because a pod in a user
/// namespace of its own (`hostUsers: false`) is no one on the host, and must be able to pass
/// through every directory above its root file system (a home directory is often `0700`).
fn real_nodes_dir(dir: &Path) -> PathBuf {
    let name = sandman_testenv::fingerprint(&[&dir.display().to_string()]);
    std::env::temp_dir().join(format!("sandman-real-nodes-{}", &name[..12]))
}

/// `testenv status`: what runs, process by process.
fn status(dir: &Path) -> Result<ExitCode, sandman_testenv::Error> {
    match RunningState::load(dir)? {
        Some(state) => {
            let alive = state.alive();
            println!(
                "server: {}\nkubeconfig: {}",
                state.server,
                state.kubeconfig.display()
            );
            for p in &state.processes {
                let running = alive.iter().any(|a| a.pid == p.pid);
                println!(
                    "{:<24} pid {:<8} {}",
                    p.name,
                    p.pid,
                    if running { "running" } else { "NOT RUNNING" }
                );
            }
            Ok(if alive.len() == state.processes.len() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        None => {
            println!("not running");
            Ok(ExitCode::from(3))
        }
    }
}

/// `testenv build`: the binaries (the control plane, helm, the pinned runsc), built when
/// missing, and where they are.
fn build() -> Result<ExitCode, sandman_testenv::Error> {
    let b = sandman_testenv::Binaries::locate_or_build()?;
    for (name, path) in [
        ("etcd", &b.etcd),
        ("kube-apiserver", &b.kube_apiserver),
        ("kube-controller-manager", &b.kube_controller_manager),
        ("kube-scheduler", &b.kube_scheduler),
        ("kubectl", &b.kubectl),
        ("kwok", &b.kwok),
    ] {
        println!("{name} {}", path.display());
    }
    println!("helm {}", sandman_testenv::helm::helm()?.display());
    println!("runsc {}", sandman_testenv::runsc::runsc()?.display());
    Ok(ExitCode::SUCCESS)
}
