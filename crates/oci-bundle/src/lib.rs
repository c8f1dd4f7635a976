//! The one OCI bundle writer of sandman: what a container runs (its process, user,
//! capabilities, root and mounts, and its namespaces), written as a bundle's `config.json` with
//! the OCI runtime spec's own types (`oci-spec`). The checkpoint supervisor runs its agent
//! from one, and the test node runs each pod's container from one.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMappingBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, ProcessBuilder, RootBuilder,
    SpecBuilder, UserBuilder,
};

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("OCI bundle: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("OCI bundle: unknown capability {0}")]
    Capability(String),
    #[error("OCI bundle: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A mount of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub destination: PathBuf,
    /// `bind`, `proc`, `tmpfs`, `sysfs`, …
    pub kind: String,
    pub source: PathBuf,
    pub options: Vec<String>,
}

impl Mount {
    /// A writable bind mount of `source` at `destination`.
    pub fn bind(source: impl Into<PathBuf>, destination: impl Into<PathBuf>) -> Self {
        Self::bind_with(source, destination, false)
    }

    /// A bind mount, read-only when `read_only`.
    pub fn bind_with(
        source: impl Into<PathBuf>,
        destination: impl Into<PathBuf>,
        read_only: bool,
    ) -> Self {
        Self {
            destination: destination.into(),
            kind: "bind".into(),
            source: source.into(),
            options: vec!["rbind".into(), if read_only { "ro" } else { "rw" }.into()],
        }
    }

    /// A kernel file system (`proc`, `tmpfs`, `sysfs`) at `destination`.
    pub fn special(kind: &str, destination: &str, options: &[&str]) -> Self {
        Self {
            destination: destination.into(),
            kind: kind.into(),
            source: kind.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }
}

/// What one container runs, and in what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub rootfs: PathBuf,
    pub readonly_root: bool,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Capability names (`CAP_KILL`): the bounding, effective and permitted sets.
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    /// A network namespace to join by path; `None` makes a new one.
    pub network_namespace: Option<PathBuf>,
    /// Paths masked from the container.
    pub masked_paths: Vec<String>,
    /// A user namespace of its own (a pod's `hostUsers: false`), or the host's.
    pub user_namespace: Option<IdRange>,
}

/// The host ids a user namespace maps: the container's users and groups `0..size` are the
/// host's `host..host + size`, so its root is nobody on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub host: u32,
    pub size: u32,
}

impl Bundle {
    /// Writes `config.json` into `dir` (made if missing); returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, BundleError> {
        std::fs::create_dir_all(dir).map_err(|source| BundleError::Io {
            what: format!("create {}", dir.display()),
            source,
        })?;
        let path = dir.join("config.json");
        let json = serde_json::to_vec_pretty(&self.spec()?).map_err(|e| BundleError::Io {
            what: format!("encode {}", path.display()),
            source: e.into(),
        })?;
        std::fs::write(&path, json).map_err(|source| BundleError::Io {
            what: format!("write {}", path.display()),
            source,
        })?;
        Ok(path)
    }

    /// The container's process: its command, user, capabilities and privileges.
    fn process(&self) -> Result<oci_spec::runtime::Process, BundleError> {
        let capabilities = self
            .capabilities
            .iter()
            .map(|c| {
                // By the spec's name (`CAP_KILL`), as serde reads it; `FromStr` wants `KILL`.
                serde_json::from_value::<Capability>(serde_json::Value::String(c.clone()))
                    .map_err(|_| BundleError::Capability(c.clone()))
            })
            .collect::<Result<std::collections::HashSet<_>, _>>()?;
        let process = ProcessBuilder::default()
            .terminal(false)
            .user(UserBuilder::default().uid(self.uid).gid(self.gid).build()?)
            .args(self.args.clone())
            .env(self.env.clone())
            .cwd(self.cwd.clone())
            .capabilities(
                // Inheritable and ambient are set, empty: oci-spec's defaults grant three
                // capabilities there, which no container of ours is meant to have.
                LinuxCapabilitiesBuilder::default()
                    .bounding(capabilities.clone())
                    .effective(capabilities.clone())
                    .permitted(capabilities)
                    .inheritable(oci_spec::runtime::Capabilities::new())
                    .ambient(oci_spec::runtime::Capabilities::new())
                    .build()?,
            )
            .no_new_privileges(self.no_new_privileges)
            .build()?;
        // Only what the bundle says: no default rlimits, device rules or read-only paths of
        // oci-spec's, which the runtimes' own defaults would otherwise not apply.
        let mut process = process;
        process.set_rlimits(None);
        Ok(process)
    }

    /// The runtime spec this bundle is.
    pub fn spec(&self) -> Result<oci_spec::runtime::Spec, BundleError> {
        let process = self.process()?;
        let mounts = self
            .mounts
            .iter()
            .map(|m| {
                MountBuilder::default()
                    .destination(&m.destination)
                    .typ(&m.kind)
                    .source(&m.source)
                    .options(m.options.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut namespaces = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
        ]
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;
        let mut network = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
        if let Some(path) = &self.network_namespace {
            network = network.path(path);
        }
        namespaces.push(network.build()?);
        let mut linux = LinuxBuilder::default();
        if let Some(range) = self.user_namespace {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::User)
                    .build()?,
            );
            let mapping = LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(range.host)
                .size(range.size)
                .build()?;
            linux = linux
                .uid_mappings(vec![mapping])
                .gid_mappings(vec![mapping]);
        }
        let mut linux = linux
            .namespaces(namespaces)
            .masked_paths(self.masked_paths.clone())
            .build()?;
        linux.set_resources(None);
        linux.set_readonly_paths(None);
        // Absent, not empty: a current runsc keeps an empty list as none in a checkpoint, and
        // then refuses the restore's `[]` as a different spec.
        if self.masked_paths.is_empty() {
            linux.set_masked_paths(None);
        }
        let mut spec = SpecBuilder::default()
            .version("1.0.2")
            .process(process)
            .root(
                RootBuilder::default()
                    .path(&self.rootfs)
                    .readonly(self.readonly_root)
                    .build()?,
            )
            .hostname(self.hostname.clone())
            .mounts(mounts)
            .linux(linux)
            .build()?;
        spec.set_annotations(None);
        Ok(spec)
    }
}

/// A container's status as a runtime's `state` command reports it (OCI runtime spec).
pub use oci_spec::runtime::ContainerState;

/// The status in a runtime's `state` answer (`runc state`, `runsc state`), `None` when the
/// answer is not a state.
pub fn status_of(state: &[u8]) -> Option<ContainerState> {
    let state: serde_json::Value = serde_json::from_slice(state).ok()?;
    serde_json::from_value(state.get("status")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Bundle {
        Bundle {
            rootfs: "/rootfs".into(),
            readonly_root: true,
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            capabilities: vec!["CAP_KILL".into()],
            no_new_privileges: true,
            hostname: "agent".into(),
            mounts: vec![
                Mount::special("proc", "/proc", &[]),
                Mount::bind("/data/ws", "/workspace"),
            ],
            network_namespace: Some("/run/netns/pod".into()),
            masked_paths: vec!["/proc/kcore".into()],
            user_namespace: None,
        }
    }

    /// What runc and runsc read: the fields by their spec names, with our values.
    #[test]
    fn the_bundle_is_the_runtime_spec_runtimes_read() {
        let dir = std::env::temp_dir().join(format!("oci-bundle-{}", std::process::id()));
        let path = bundle().write(&dir).expect("written");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(config["process"]["user"]["uid"], 1000);
        assert_eq!(config["process"]["args"][0], "/bin/sh");
        assert_eq!(config["process"]["noNewPrivileges"], true);
        assert_eq!(config["process"]["capabilities"]["bounding"][0], "CAP_KILL");
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(config["mounts"][1]["type"], "bind");
        assert_eq!(config["mounts"][1]["options"][1], "rw");
        let namespaces = config["linux"]["namespaces"]
            .as_array()
            .expect("namespaces");
        let network = namespaces
            .iter()
            .find(|n| n["type"] == "network")
            .expect("a network namespace");
        assert_eq!(network["path"], "/run/netns/pod");
        assert_eq!(config["linux"]["maskedPaths"][0], "/proc/kcore");
        // Nothing beyond what the bundle says: no capabilities kept across exec or raised
        // ambiently, no limits, device rules or read-only paths of the library's defaults.
        let capabilities = &config["process"]["capabilities"];
        assert_eq!(capabilities["ambient"], serde_json::json!([]));
        assert_eq!(capabilities["inheritable"], serde_json::json!([]));
        assert!(config["process"].get("rlimits").is_none(), "{config}");
        assert!(config["linux"].get("resources").is_none(), "{config}");
        assert!(config["linux"].get("readonlyPaths").is_none(), "{config}");
    }

    #[test]
    fn a_user_namespace_maps_the_containers_ids_onto_the_range() {
        assert!(
            !bundle()
                .spec()
                .expect("spec")
                .linux()
                .as_ref()
                .expect("linux")
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == LinuxNamespaceType::User),
            "the host's users unless asked"
        );
        let mut own = bundle();
        own.user_namespace = Some(IdRange {
            host: 165_536,
            size: 65_536,
        });
        let config = serde_json::to_value(own.spec().expect("spec")).expect("json");
        let linux = &config["linux"];
        assert!(
            linux["namespaces"]
                .as_array()
                .expect("namespaces")
                .iter()
                .any(|n| n["type"] == "user" && n.get("path").is_none()),
            "{linux}"
        );
        for ids in ["uidMappings", "gidMappings"] {
            assert_eq!(
                linux[ids],
                serde_json::json!([{"containerID": 0, "hostID": 165_536, "size": 65_536}]),
                "{ids}"
            );
        }
    }

    #[test]
    fn an_unknown_capability_is_refused() {
        let mut bad = bundle();
        bad.capabilities.push("CAP_NOT_A_THING".into());
        assert!(matches!(bad.spec(), Err(BundleError::Capability(c)) if c == "CAP_NOT_A_THING"));
    }

    #[test]
    fn a_runtime_state_reads_as_a_status() {
        let state = br#"{"ociVersion":"1.0.2","id":"a","pid":7,"status":"stopped","bundle":"/b"}"#;
        assert_eq!(status_of(state), Some(ContainerState::Stopped));
        assert_eq!(
            status_of(br#"{"status":"running"}"#),
            Some(ContainerState::Running)
        );
        assert_eq!(status_of(b"container a does not exist"), None);
    }
}
