//! A real OCI registry on loopback: Debian's `docker-registry` (CNCF distribution 2.8), with
//! filesystem storage in a directory of its own, for tests of policy distribution.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Lifetime;
use crate::error::Error;
use crate::ports::free_loopback_port;
use crate::process::{self, Spawned};
use crate::token_server::TokenServer;

/// Where the registry binary is, unless `SANDMAN_REGISTRY_BIN` says otherwise.
const DEFAULT_BINARY: &str = "/usr/bin/docker-registry";

const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Registry {
    process: Spawned,
    address: String,
}

impl Registry {
    /// Starts a registry that stores its blobs under `dir` and listens on a free loopback port.
    pub fn start(dir: &Path, lifetime: Lifetime) -> Result<Self, Error> {
        Self::start_with(dir, lifetime, None)
    }

    /// Starts a registry that accepts only tokens from `token_server` (Bearer challenges, as
    /// Docker Hub and ghcr.io send).
    pub fn start_with_token_auth(
        dir: &Path,
        lifetime: Lifetime,
        token_server: &TokenServer,
    ) -> Result<Self, Error> {
        Self::start_with(dir, lifetime, Some(token_server))
    }

    fn start_with(
        dir: &Path,
        lifetime: Lifetime,
        token_server: Option<&TokenServer>,
    ) -> Result<Self, Error> {
        let binary = PathBuf::from(
            std::env::var("SANDMAN_REGISTRY_BIN").unwrap_or_else(|_| DEFAULT_BINARY.into()),
        );
        if !binary.is_file() {
            return Err(Error::MissingBinary(binary));
        }
        std::fs::create_dir_all(dir.join("storage"))
            .map_err(Error::io(format!("create {}", dir.display())))?;
        let address = format!("127.0.0.1:{}", free_loopback_port()?);
        let config = dir.join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            dir.join("storage").display()
        );
        if let Some(tokens) = token_server {
            text.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                tokens.realm(),
                crate::token_server::SERVICE,
                crate::token_server::ISSUER,
                tokens.certificate().display()
            ));
        }
        std::fs::write(&config, text).map_err(Error::io(format!("write {}", config.display())))?;
        let log = dir.join("registry.log");
        let process = process::spawn(
            "docker-registry",
            &binary,
            &["serve".into(), config.display().to_string()],
            &log,
            lifetime,
        )?;
        let mut registry = Self { process, address };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !answers(&registry.address) {
            if let Some(status) = registry.process.exit_status() {
                return Err(Error::Exited {
                    component: "docker-registry".into(),
                    status,
                    log,
                });
            }
            if Instant::now() > deadline {
                registry.process.stop();
                return Err(Error::NotReady {
                    component: "docker-registry".into(),
                    seconds: READY_TIMEOUT.as_secs(),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// `127.0.0.1:<port>`, the registry part of an OCI reference.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.process.stop();
    }
}

/// Whether the registry answers `/v2/` at all: 200 without auth, 401 with it.
fn answers(address: &str) -> bool {
    matches!(
        crate::control_plane::http_status_at(address, "/v2/"),
        Some(200 | 401)
    )
}
