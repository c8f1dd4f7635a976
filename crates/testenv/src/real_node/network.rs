//! A real node's network, all of it inside network namespaces the node makes and removes:
//!
//! - the node's own namespace `sandman-k<slot>`, holding a bridge, the pod subnet
//!   `10.244.<slot>.0/24` and nothing else;
//! - one namespace per pod (`sandman-k<slot>-p<n>`), its `eth0` on that bridge with address
//!   `10.244.<slot>.<n>` and its own loopback;
//! - one veth pair from the machine into the bridge, whose machine end holds `10.244.<slot>.1`,
//!   so the operator and the gateway (which run on the machine) reach pods as they would across
//!   a cluster network. Pods get no default route: nothing they send can leave the subnet.
//!
//! The slot is claimed by creating the node's namespace, which fails when it exists, so nodes of
//! concurrent test binaries never share a subnet. A slot whose owner died (its pid file names a
//! process that is gone) is swept and claimed again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;

/// Where slot owners write their pid, for sweeping slots of nodes that died.
const OWNERS: &str = "/run/sandman-real-nodes";
/// How many nodes (subnets) can exist on one machine at once.
const SLOTS: u16 = 256;

/// Pods' host numbers run from 2 (.1 is the machine's end of the uplink) to 254 (.255 is
/// broadcast).
const FIRST_HOST: u8 = 2;
const LAST_HOST: u8 = 254;

/// The next free host number after `last`, wrapping: an address freed a moment ago is not
/// handed out again while the machine may still remember its old owner's MAC.
fn next_host(taken: &BTreeSet<u8>, last: u8) -> Option<u8> {
    let span = u16::from(LAST_HOST - FIRST_HOST) + 1;
    let offset = u16::from(last.clamp(FIRST_HOST, LAST_HOST) - FIRST_HOST);
    (1..=span)
        .filter_map(|step| u8::try_from((offset + step) % span).ok())
        .map(|n| n + FIRST_HOST)
        .find(|host| !taken.contains(host))
}

/// The network of one pod: its namespace and address.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub ip: String,
    /// The namespace's bind mount, for the OCI spec's `linux.namespaces`.
    pub namespace_path: PathBuf,
    namespace: String,
    host: u8,
}

/// A node's network, removed when dropped (pods' namespaces included).
pub struct NodeNetwork {
    /// The `ip` binary, found once.
    ip: &'static str,
    slot: u8,
    namespace: String,
    /// Host numbers (the last octet) given to pods now, and the last one given.
    taken: Mutex<(BTreeSet<u8>, u8)>,
    /// Set once removed: the slot may be another node's by the time this one is dropped.
    removed: AtomicBool,
}

impl NodeNetwork {
    /// Claims a free slot and builds the node's namespace, bridge and uplink.
    pub fn create() -> Result<Self, Error> {
        let ip = ip_binary().ok_or_else(|| {
            Error::State("a real node needs `ip` (apt-get install iproute2)".into())
        })?;
        std::fs::create_dir_all(OWNERS).map_err(Error::io(format!("create {OWNERS}")))?;
        for slot in 0..SLOTS {
            let slot = u8::try_from(slot).map_err(|_| Error::State("slot out of range".into()))?;
            let namespace = format!("sandman-k{slot}");
            if run(ip, &["netns", "add", &namespace]).is_err() {
                // Taken: by a live node, or by one that died without cleaning up.
                if !owner_is_gone(slot) {
                    continue;
                }
                sweep(ip, slot);
                if run(ip, &["netns", "add", &namespace]).is_err() {
                    continue;
                }
            }
            std::fs::write(owner_file(slot), std::process::id().to_string())
                .map_err(Error::io(format!("write {}", owner_file(slot).display())))?;
            let network = Self {
                ip,
                slot,
                namespace,
                taken: Mutex::new((BTreeSet::new(), LAST_HOST)),
                removed: AtomicBool::new(false),
            };
            network.build().map_err(Error::State)?;
            return Ok(network);
        }
        Err(Error::State(format!(
            "no free real-node network: all {SLOTS} slots of 10.244.0.0/16 are taken"
        )))
    }

    fn build(&self) -> Result<(), String> {
        let ip = self.ip;
        let ns = self.namespace.as_str();
        let host_link = self.host_link();
        let gateway = format!("{}/24", self.address(1));
        run(ip, &["-n", ns, "link", "set", "lo", "up"])?;
        run(ip, &["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        run(ip, &["-n", ns, "link", "set", "br0", "up"])?;
        run(
            ip,
            &[
                "link", "add", &host_link, "type", "veth", "peer", "name", "uplink", "netns", ns,
            ],
        )?;
        run(
            ip,
            &["-n", ns, "link", "set", "uplink", "master", "br0", "up"],
        )?;
        run(ip, &["addr", "add", &gateway, "dev", &host_link])?;
        run(ip, &["link", "set", &host_link, "up"])
    }

    /// The node's own namespace, `sandman-k<slot>`; its pods' are `sandman-k<slot>-p<n>`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pod subnet, `10.244.<slot>.0/24`.
    /// The node's slot: no two live nodes on the machine share it.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    pub fn subnet(&self) -> String {
        format!("{}/24", self.address(0))
    }

    fn address(&self, host: u8) -> String {
        format!("10.244.{}.{host}", self.slot)
    }

    fn host_link(&self) -> String {
        format!("smk{}", self.slot)
    }

    /// A namespace of its own for a pod, on the node's bridge, with the next free address.
    pub fn attach(&self) -> Result<PodNetwork, String> {
        let host = {
            let mut guard = self.taken.lock().map_err(|_| "a poisoned lock")?;
            let (taken, last) = &mut *guard;
            let host = next_host(taken, *last).ok_or("the node's subnet is full (253 pods)")?;
            taken.insert(host);
            *last = host;
            host
        };
        let pod = PodNetwork {
            ip: self.address(host),
            namespace_path: Path::new("/var/run/netns").join(self.pod_namespace(host)),
            namespace: self.pod_namespace(host),
            host,
        };
        let built = self.build_pod(&pod);
        if built.is_err() {
            self.detach(&pod);
        }
        built.map(|()| pod)
    }

    fn pod_namespace(&self, host: u8) -> String {
        format!("{}-p{host}", self.namespace)
    }

    fn build_pod(&self, pod: &PodNetwork) -> Result<(), String> {
        let ip = self.ip;
        let (node, ns) = (self.namespace.as_str(), pod.namespace.as_str());
        let bridge_end = format!("p{}", pod.host);
        let address = format!("{}/24", pod.ip);
        // A namespace left by a pod whose removal was cut short goes first.
        let _ = run(ip, &["netns", "del", ns]);
        run(ip, &["netns", "add", ns])?;
        run(ip, &["-n", ns, "link", "set", "lo", "up"])?;
        run(
            ip,
            &[
                "-n",
                node,
                "link",
                "add",
                &bridge_end,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ],
        )?;
        run(
            ip,
            &[
                "-n",
                node,
                "link",
                "set",
                &bridge_end,
                "master",
                "br0",
                "up",
            ],
        )?;
        run(ip, &["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
        run(ip, &["-n", ns, "link", "set", "eth0", "up"])?;
        // The machine may still hold the MAC of this address's previous pod: until that entry
        // goes stale, packets to the new pod would go nowhere.
        let _ = run(ip, &["neigh", "del", &pod.ip, "dev", &self.host_link()]);
        Ok(())
    }

    /// Removes a pod's namespace (its veth pair goes with it) and frees its address.
    pub fn detach(&self, pod: &PodNetwork) {
        let _ = run(self.ip, &["netns", "del", &pod.namespace]);
        if let Ok(mut guard) = self.taken.lock() {
            guard.0.remove(&pod.host);
        }
    }
}

impl NodeNetwork {
    /// Removes the node's namespaces, pods' included; only the first call does anything.
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        sweep(self.ip, self.slot);
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes slot `slot`'s pod namespaces, its node namespace (the uplink and its machine end go
/// with it) and its owner file.
fn sweep(ip: &str, slot: u8) {
    let node = format!("sandman-k{slot}");
    let pods = format!("{node}-p");
    if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str()
                && name.starts_with(&pods)
            {
                let _ = run(ip, &["netns", "del", name]);
            }
        }
    }
    let _ = run(ip, &["netns", "del", &node]);
    // The machine's end usually goes with its peer; not when the namespace outlived it.
    let _ = run(ip, &["link", "del", &format!("smk{slot}")]);
    let _ = std::fs::remove_file(owner_file(slot));
}

fn owner_file(slot: u8) -> PathBuf {
    Path::new(OWNERS).join(format!("k{slot}"))
}

/// True when slot `slot`'s owner file names a process that no longer exists. Without an owner
/// file the slot may be mid-claim, so it is not taken for gone.
fn owner_is_gone(slot: u8) -> bool {
    let Ok(pid) = std::fs::read_to_string(owner_file(slot)) else {
        return false;
    };
    let pid = pid.trim();
    !pid.is_empty() && !Path::new("/proc").join(pid).exists()
}

fn ip_binary() -> Option<&'static str> {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

fn run(ip: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(ip)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{ip}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_go_round_before_coming_back() {
        let mut taken = BTreeSet::new();
        assert_eq!(next_host(&taken, LAST_HOST), Some(2));
        assert_eq!(next_host(&taken, 2), Some(3));
        // Freed .3 is not given again right away: .4 comes first.
        taken.insert(2);
        assert_eq!(next_host(&taken, 3), Some(4));
        assert_eq!(next_host(&taken, 253), Some(254));
        assert_eq!(next_host(&taken, 254), Some(3));
        let full: BTreeSet<u8> = (FIRST_HOST..=LAST_HOST).collect();
        assert_eq!(next_host(&full, 100), None);
        let all_but_one: BTreeSet<u8> = (FIRST_HOST..=LAST_HOST).filter(|h| *h != 7).collect();
        assert_eq!(next_host(&all_but_one, 200), Some(7));
    }
}
