//! One local control plane: its processes, its files and its lifecycle.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::binaries::Binaries;
use crate::pki::{Pki, write_private};
use crate::ports::free_loopback_port;
use crate::process::{self, Spawned};
use crate::{Error, bootstrap};

pub use crate::process::Lifetime;

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Everything the control plane writes goes here: certificates, etcd data, logs, state.
    pub dir: PathBuf,
    /// Fake nodes that kwok manages (at most 16).
    pub nodes: usize,
    /// Whether the processes die with the starting process.
    pub lifetime: Lifetime,
    /// CustomResourceDefinitions to install (every `*.yaml` in this directory), if any.
    pub crds_dir: Option<PathBuf>,
}

impl Options {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            nodes: 3,
            lifetime: Lifetime::TiedToParent,
            crds_dir: None,
        }
    }
}

/// What `testenv status` and `testenv down` need to find a running control plane again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningState {
    pub server: String,
    pub kubeconfig: PathBuf,
    pub processes: Vec<ProcessState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessState {
    pub name: String,
    pub pid: u32,
    pub binary: PathBuf,
    pub log: PathBuf,
}

impl RunningState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<Option<Self>, Error> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()))(e)),
        }
    }

    /// The recorded processes that are still running.
    pub fn alive(&self) -> Vec<&ProcessState> {
        self.processes
            .iter()
            .filter(|p| process::is_alive(p.pid, &p.binary))
            .collect()
    }
}

/// A running control plane. Dropping it does not stop it: [`ControlPlane::stop`] does, and a
/// [`Lifetime::TiedToParent`] control plane also stops when this process exits.
#[derive(Debug)]
pub struct ControlPlane {
    /// From the start of [`ControlPlane::start`] until kube-apiserver answered `/readyz`.
    api_ready_after: Duration,
    dir: PathBuf,
    server: String,
    /// etcd's client URL (plain HTTP on loopback), for tests that act on storage directly.
    etcd: String,
    kubeconfig: PathBuf,
    /// Behind a lock so that a test can restart or freeze one of a shared control plane.
    processes: Mutex<Vec<Spawned>>,
}

/// The kubelet-less pod network: every pod IP is on loopback, so a test can play a pod's
/// container by listening on the pod's IP.
const POD_CIDR: &str = "127.1.0.0/16";

const KWOK_STAGES: &str = include_str!("kwok/stages.yaml");

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, then
    /// creates the fake nodes, the default StorageClass and the CRDs, and waits for all of them.
    pub fn start(options: &Options) -> Result<Self, Error> {
        if options.nodes == 0 || options.nodes > 16 {
            return Err(Error::State(format!(
                "nodes must be between 1 and 16, not {}",
                options.nodes
            )));
        }
        let binaries = Binaries::locate_or_build()?;
        let dir = &options.dir;
        let logs = dir.join("logs");
        for sub in [&logs, &dir.join("etcd")] {
            std::fs::create_dir_all(sub).map_err(Error::io(format!("create {}", sub.display())))?;
        }
        let pki = Pki::generate(&dir.join("pki"))?;
        let mut plane = Self {
            api_ready_after: Duration::ZERO,
            dir: dir.clone(),
            server: String::new(),
            etcd: String::new(),
            kubeconfig: dir.join("admin.kubeconfig"),
            processes: Mutex::new(Vec::new()),
        };
        let started = Instant::now();
        match plane.start_processes(&binaries, &pki, options, started) {
            Ok(()) => {
                plane.save_state()?;
                Ok(plane)
            }
            Err(e) => {
                plane.stop();
                Err(e)
            }
        }
    }

    fn start_processes(
        &mut self,
        binaries: &Binaries,
        pki: &Pki,
        options: &Options,
        started: Instant,
    ) -> Result<(), Error> {
        let etcd_url = self.start_etcd(binaries, options)?;
        self.etcd = etcd_url.clone();
        self.start_api_server(binaries, pki, options, &etcd_url)?;
        self.api_ready_after = started.elapsed();
        let setup = bootstrap::Setup {
            kubeconfig: self.kubeconfig.clone(),
            nodes: options.nodes,
            crds_dir: options.crds_dir.clone(),
        };
        self.retry_until_settled("cluster objects", || {
            bootstrap::run(bootstrap::apply_objects(&setup))
        })?;

        let kubeconfig_flag = format!("--kubeconfig={}", self.kubeconfig.display());
        let delegated_auth = [
            format!("--authentication-kubeconfig={}", self.kubeconfig.display()),
            format!("--authorization-kubeconfig={}", self.kubeconfig.display()),
        ];
        self.start_controller_manager(binaries, pki, options, &delegated_auth)?;
        self.start_scheduler(binaries, options, &delegated_auth)?;
        self.start_kwok(binaries, options, kubeconfig_flag)?;
        self.retry_until_settled("cluster setup", || {
            bootstrap::run(bootstrap::wait_settled(&setup))
        })
    }

    /// etcd on two free loopback ports, once healthy; returns its client URL.
    fn start_etcd(&mut self, binaries: &Binaries, options: &Options) -> Result<String, Error> {
        let etcd_client = free_loopback_port()?;
        let etcd_peer = free_loopback_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        self.spawn(
            "etcd",
            &binaries.etcd,
            vec![
                "--name=default".into(),
                format!("--data-dir={}", self.dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                // Test data is disposable; fsync dominates etcd latency on shared disks.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            options.lifetime,
        )?;
        self.wait_for("etcd", Duration::from_secs(60), || {
            http_get_ok(etcd_client, "/health")
        })?;

        Ok(etcd_url)
    }

    /// kube-apiserver on a free loopback port, once it answers; writes the admin kubeconfig.
    fn start_api_server(
        &mut self,
        binaries: &Binaries,
        pki: &Pki,
        options: &Options,
        etcd_url: &str,
    ) -> Result<(), Error> {
        let api_port = free_loopback_port()?;
        self.server = format!("https://127.0.0.1:{api_port}");
        write_private(&self.kubeconfig, &pki.admin_kubeconfig(&self.server))?;
        let sa_key = pki.service_account_key.display().to_string();
        self.spawn(
            "kube-apiserver",
            &binaries.kube_apiserver,
            vec![
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", self.dir.join("pki").display()),
                format!("--tls-cert-file={}", pki.serving_cert.display()),
                format!("--tls-private-key-file={}", pki.serving_key.display()),
                format!("--client-ca-file={}", pki.ca_cert.display()),
                "--authorization-mode=RBAC".into(),
                format!(
                    "--service-account-key-file={}",
                    pki.service_account_public_key.display()
                ),
                format!("--service-account-signing-key-file={sa_key}"),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--allow-privileged=true".into(),
                // The kubernetes Service cannot point at a loopback address.
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            options.lifetime,
        )?;
        let kubeconfig = self.kubeconfig.clone();
        self.wait_for("kube-apiserver", Duration::from_secs(120), || {
            bootstrap::run(bootstrap::api_ready(&kubeconfig)).unwrap_or(false)
        })?;

        Ok(())
    }

    fn start_controller_manager(
        &mut self,
        binaries: &Binaries,
        pki: &Pki,
        options: &Options,
        delegated_auth: &[String],
    ) -> Result<(), Error> {
        let sa_key = pki.service_account_key.display().to_string();
        let mut kcm_args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_loopback_port()?),
            "--leader-elect=false".into(),
            // Endpoints cannot hold loopback pod IPs, so those controllers would only log
            // errors; nothing in sandman reads Endpoints.
            "--controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller".into(),
            // Dynamic PVs under /tmp/hostpath_pv, bound by the real PV binder.
            "--enable-hostpath-provisioner=true".into(),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            format!("--service-account-private-key-file={sa_key}"),
            format!("--cluster-signing-cert-file={}", pki.ca_cert.display()),
            format!("--cluster-signing-key-file={}", pki.ca_key.display()),
            "--use-service-account-credentials=false".into(),
            "--kube-api-qps=200".into(),
            "--kube-api-burst=400".into(),
            "--concurrent-gc-syncs=20".into(),
            "--v=1".into(),
        ];
        kcm_args.extend(delegated_auth.iter().cloned());
        self.spawn(
            "kube-controller-manager",
            &binaries.kube_controller_manager,
            kcm_args,
            options.lifetime,
        )?;

        Ok(())
    }

    fn start_scheduler(
        &mut self,
        binaries: &Binaries,
        options: &Options,
        delegated_auth: &[String],
    ) -> Result<(), Error> {
        // Pods whose claims are not bound yet are retried with the scheduler's backoff, 10 s at
        // most by default; a test cluster should not sit idle that long. The client limits are
        // raised for bursts of hundreds of pods.
        let scheduler_config = self.dir.join("kube-scheduler.yaml");
        std::fs::write(
            &scheduler_config,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nclientConnection:\n  kubeconfig: {}\n  qps: 200\n  burst: 400\nleaderElection:\n  leaderElect: false\npodInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 1\n",
                self.kubeconfig.display()
            ),
        )
        .map_err(Error::io("write kube-scheduler.yaml"))?;
        let mut scheduler_args = vec![
            format!("--config={}", scheduler_config.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_loopback_port()?),
            "--v=1".into(),
        ];
        scheduler_args.extend(delegated_auth.iter().cloned());
        self.spawn(
            "kube-scheduler",
            &binaries.kube_scheduler,
            scheduler_args,
            options.lifetime,
        )?;

        Ok(())
    }

    fn start_kwok(
        &mut self,
        binaries: &Binaries,
        options: &Options,
        kubeconfig_flag: String,
    ) -> Result<(), Error> {
        // kwok needs Stages to move nodes and pods along; it has no built-in default.
        let kwok_config = self.dir.join("kwok-stages.yaml");
        std::fs::write(&kwok_config, KWOK_STAGES).map_err(Error::io("write kwok-stages.yaml"))?;
        self.spawn(
            "kwok",
            &binaries.kwok,
            vec![
                kubeconfig_flag,
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                format!("--cidr={POD_CIDR}"),
                "--node-ip=127.0.0.1".into(),
                format!("--server-address=127.0.0.1:{}", free_loopback_port()?),
                format!("--config={}", kwok_config.display()),
                // Without leases the node lifecycle controller marks every node NotReady after
                // its grace period, and with it every pod.
                "--node-lease-duration-seconds=40".into(),
            ],
            options.lifetime,
        )?;

        Ok(())
    }

    /// Retries `step` until it succeeds, a process dies, or two minutes pass.
    fn retry_until_settled(
        &mut self,
        what: &str,
        mut step: impl FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(e) = self.first_exited() {
                return Err(e);
            }
            match step() {
                Ok(()) => return Ok(()),
                // A malformed CRD file does not get better by waiting.
                Err(e @ Error::State(_)) => return Err(e),
                Err(e) if Instant::now() > deadline => {
                    return Err(Error::Kube(format!("{what}: {e}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn spawn(
        &mut self,
        name: &str,
        binary: &Path,
        args: Vec<String>,
        lifetime: Lifetime,
    ) -> Result<(), Error> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let spawned = process::spawn(name, binary, &args, &log, lifetime)?;
        self.processes().push(spawned);
        Ok(())
    }

    fn first_exited(&mut self) -> Option<Error> {
        self.processes().iter_mut().find_map(|p| {
            p.exit_status().map(|status| Error::Exited {
                component: p.name.clone(),
                status,
                log: p.log.clone(),
            })
        })
    }

    fn wait_for(
        &mut self,
        component: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.first_exited() {
                return Err(e);
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    component: component.into(),
                    seconds: timeout.as_secs(),
                    log: self.dir.join("logs").join(format!("{component}.log")),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts one more process that lives and stops with the control plane (a real node's
    /// agent, say), and records it so that `testenv down` stops it too.
    pub fn add_process(
        &mut self,
        name: &str,
        binary: &Path,
        args: Vec<String>,
        lifetime: Lifetime,
    ) -> Result<(), Error> {
        self.spawn(name, binary, args, lifetime)?;
        self.save_state()
    }

    fn save_state(&self) -> Result<(), Error> {
        let state = self.state();
        let text = serde_json::to_string_pretty(&state).map_err(|e| Error::State(e.to_string()))?;
        let path = RunningState::path(&self.dir);
        std::fs::write(&path, text).map_err(Error::io(format!("write {}", path.display())))
    }

    pub fn state(&self) -> RunningState {
        RunningState {
            server: self.server.clone(),
            kubeconfig: self.kubeconfig.clone(),
            processes: self
                .processes()
                .iter()
                .map(|p| ProcessState {
                    name: p.name.clone(),
                    pid: p.pid,
                    binary: p.binary.clone(),
                    log: p.log.clone(),
                })
                .collect(),
        }
    }

    /// The admin kubeconfig (group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// How long kube-apiserver took to answer `/readyz` (binaries already built).
    pub fn api_ready_after(&self) -> Duration {
        self.api_ready_after
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// etcd's client URL (`http://127.0.0.1:<port>`); its v3 JSON gateway answers there.
    pub fn etcd(&self) -> &str {
        &self.etcd
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of every component's log, for a failing test's output.
    pub fn log_tails(&self, lines: usize) -> String {
        self.processes()
            .iter()
            .map(|p| {
                format!(
                    "----- {} ({}) -----\n{}",
                    p.name,
                    p.log.display(),
                    process::tail(&p.log, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every process this control plane started, newest first, and nothing else.
    pub fn stop(&mut self) {
        for p in self.processes().iter_mut().rev() {
            p.stop();
        }
        let _ = std::fs::remove_file(RunningState::path(&self.dir));
    }

    fn processes(&self) -> std::sync::MutexGuard<'_, Vec<Spawned>> {
        self.processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Kills `component` (`etcd`, `kube-apiserver`, …) at once and starts it again with the
    /// same flags, data and ports, as a crash and a supervisor's restart would. Returns once it
    /// is started, not once it is ready.
    pub fn restart(&self, component: &str) -> Result<(), Error> {
        let mut processes = self.processes();
        let process = processes
            .iter_mut()
            .find(|p| p.name == component)
            .ok_or_else(|| Error::State(format!("no {component} in this control plane")))?;
        process.restart()?;
        drop(processes);
        self.save_state()
    }

    /// Freezes `component` (SIGSTOP) until the guard is dropped: alive, holding its
    /// connections, answering nothing.
    pub fn freeze(&self, component: &str) -> Result<Frozen<'_>, Error> {
        let processes = self.processes();
        let process = processes
            .iter()
            .find(|p| p.name == component)
            .ok_or_else(|| Error::State(format!("no {component} in this control plane")))?;
        process.pause(true);
        Ok(Frozen {
            plane: self,
            component: component.to_string(),
        })
    }
}

/// A frozen component, thawed (SIGCONT) when dropped, however the test ends.
pub struct Frozen<'a> {
    plane: &'a ControlPlane,
    component: String,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Some(process) = self
            .plane
            .processes()
            .iter()
            .find(|p| p.name == self.component)
        {
            process.pause(false);
        }
    }
}

/// Stops the processes recorded in `state`, checking that each pid still runs the recorded
/// binary, so a recycled pid is never signalled.
pub fn stop_recorded(dir: &Path) -> Result<RunningState, Error> {
    let state = RunningState::load(dir)?.ok_or_else(|| Error::NotRunning(dir.to_path_buf()))?;
    let mut processes: Vec<Spawned> = state
        .processes
        .iter()
        .map(|p| Spawned::recorded(&p.name, p.pid, &p.binary, &p.log))
        .collect();
    for p in processes.iter_mut().rev() {
        p.stop();
    }
    let _ = std::fs::remove_file(RunningState::path(dir));
    Ok(state)
}

/// A bare HTTP/1.0 GET on loopback: enough to ask etcd for `/health` without a client crate.
fn http_get_ok(port: u16, path: &str) -> bool {
    http_get_ok_at(&format!("127.0.0.1:{port}"), path)
}

pub(crate) fn http_get_ok_at(address: &str, path: &str) -> bool {
    http_status_at(address, path) == Some(200)
}

/// The status of a plain `GET path` on `address`, if anything answers.
pub(crate) fn http_status_at(address: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(address).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}
