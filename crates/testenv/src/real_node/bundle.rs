//! A pod's container as an OCI bundle: its volumes as the node holds them, its service
//! account token, and what its spec and security context ask, through the one bundle writer
//! (`sandman-oci-bundle`) the checkpoint supervisor uses too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use sandman_oci_bundle as oci;

use super::Agent;
use super::network::PodNetwork;

/// The capabilities a container has unless its security context says otherwise (containerd's
/// defaults).
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The container's mounts: its pod's volumes, as the node holds them.
pub(super) async fn volumes(
    agent: &Agent,
    pod: &Pod,
    container: &Container,
    bundle: &Path,
    ids: Option<oci::IdRange>,
) -> Result<Vec<oci::Mount>, String> {
    let spec = pod.spec.as_ref().ok_or("a pod without a spec")?;
    let namespace = pod.namespace().unwrap_or_default();
    let mut sources: HashMap<String, PathBuf> = HashMap::new();
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for volume in spec.volumes.iter().flatten() {
        let dir = if let Some(claim) = &volume.persistent_volume_claim {
            agent
                .dir
                .join("volumes")
                .join(&namespace)
                .join(&claim.claim_name)
        } else if let Some(image) = &volume.image {
            let reference = image.reference.clone().unwrap_or_default();
            let loaded = agent
                .images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&reference)
                .cloned();
            loaded.ok_or_else(|| {
                format!("volume {}: image {reference} is not loaded on this node (images are loaded, never pulled)", volume.name)
            })?
        } else if volume.empty_dir.is_some() {
            bundle.join("empty").join(&volume.name)
        } else if let Some(projected) = &volume.projected {
            let dir = bundle.join("projected").join(&volume.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("volume {}: {e}", volume.name))?;
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    let value = service_account_token(agent, pod).await?;
                    std::fs::write(dir.join(&token.path), value)
                        .map_err(|e| format!("volume {}: {e}", volume.name))?;
                }
            }
            dir
        } else {
            continue;
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("volume {}: {e}", volume.name))?;
        let writable = volume.persistent_volume_claim.is_some() || volume.empty_dir.is_some();
        if let Some(group) = fs_group.filter(|_| writable) {
            own_by_group(&dir, group)
                .map_err(|e| format!("volume {}: fsGroup: {e}", volume.name))?;
        }
        // A user-namespaced container's ids are other ids on the host: what it may write is
        // handed to them, as the kubelet's id-mapped mounts would show it.
        if let Some(ids) = ids.filter(|_| writable || volume.projected.is_some()) {
            super::users::shift(&dir, ids)
                .map_err(|e| format!("volume {}: user namespace: {e}", volume.name))?;
        }
        sources.insert(volume.name.clone(), dir);
    }
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let source = sources
            .get(&mount.name)
            .ok_or_else(|| format!("volume {} is not one this node provides", mount.name))?;
        mounts.push(oci::Mount::bind_with(
            source,
            &mount.mount_path,
            mount.read_only == Some(true),
        ));
    }
    Ok(mounts)
}

/// What the kubelet does for `fsGroup`: the volume's directory belongs to the group, which
/// may write it, and what is made in it inherits the group (setgid).
fn own_by_group(dir: &Path, group: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(dir, None, Some(group))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2775))
}

/// The container's environment: its values, and its `secretKeyRef`s read from the API as the
/// kubelet reads them. A Secret or key that is missing keeps the container from starting.
pub(super) async fn environment(
    agent: &Agent,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(agent.client.clone(), &namespace);
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            env.push((var.name.clone(), value.clone()));
        } else if let Some(key) = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            let secret = secrets
                .get(&key.name)
                .await
                .map_err(|e| format!("env {}: Secret {}: {e}", var.name, key.name))?;
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&key.key))
                .ok_or_else(|| {
                    format!(
                        "env {}: Secret {} has no key {}",
                        var.name, key.name, key.key
                    )
                })?;
            env.push((
                var.name.clone(),
                String::from_utf8_lossy(&value.0).into_owned(),
            ));
        }
    }
    Ok(env)
}

/// A token for the pod's service account, as the kubelet's projection would write it.
async fn service_account_token(agent: &Agent, pod: &Pod) -> Result<String, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(agent.client.clone(), &namespace);
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({ "spec": { "audiences": [] } }))
            .map_err(|e| e.to_string())?;
    let issued = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for {account}: {e}"))?;
    Ok(issued.status.and_then(|s| s.token).unwrap_or_default())
}

/// The OCI bundle of a pod's container: its command, environment (as [`environment`] read
/// it, and `POD_IP`), user, capabilities and privilege escalation from its security context, the image
/// read-only with a memory-backed `/tmp`, its mounts, and the pod's network namespace.
pub(super) fn container_bundle(
    pod: &Pod,
    container: &Container,
    rootfs: &Path,
    network: &PodNetwork,
    volume_mounts: Vec<oci::Mount>,
    environment: Vec<(String, String)>,
) -> Result<oci::Bundle, String> {
    let mut args: Vec<String> = container.command.clone().unwrap_or_default();
    args.extend(container.args.clone().unwrap_or_default());
    if args.is_empty() {
        return Err("the node's image has no default command: the container must name one".into());
    }
    let mut env = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        format!("POD_IP={}", network.ip),
        format!("HOSTNAME={}", pod.name_any()),
    ];
    env.extend(
        environment
            .iter()
            .map(|(name, value)| format!("{name}={value}")),
    );
    let pod_context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let context = container.security_context.as_ref();
    let id = |own: Option<i64>, pod: Option<i64>| {
        u32::try_from(own.or(pod).unwrap_or(0))
            .map_err(|_| "a user or group id out of range".to_string())
    };
    let uid = id(
        context.and_then(|c| c.run_as_user),
        pod_context.and_then(|c| c.run_as_user),
    )?;
    let gid = id(
        context.and_then(|c| c.run_as_group),
        pod_context.and_then(|c| c.run_as_group),
    )?;
    let mut mounts = vec![
        oci::Mount::special("tmpfs", "/dev", &[]),
        oci::Mount::special("tmpfs", "/tmp", &[]),
        oci::Mount::special("proc", "/proc", &[]),
    ];
    mounts.extend(volume_mounts);
    Ok(oci::Bundle {
        rootfs: rootfs.to_path_buf(),
        readonly_root: true,
        args,
        env,
        cwd: container.working_dir.clone().unwrap_or_else(|| "/".into()),
        uid,
        gid,
        capabilities: capabilities(context.and_then(|c| c.capabilities.as_ref())),
        no_new_privileges: context.and_then(|c| c.allow_privilege_escalation) == Some(false),
        hostname: pod.name_any(),
        mounts,
        network_namespace: Some(network.namespace_path.clone()),
        masked_paths: [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/sys/firmware",
        ]
        .map(String::from)
        .to_vec(),
        user_namespace: None,
    })
}

/// The default set, less what the security context drops, plus what it adds.
fn capabilities(asked: Option<&k8s_openapi::api::core::v1::Capabilities>) -> Vec<String> {
    let name = |c: &String| {
        let upper = c.to_uppercase();
        if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let drop: Vec<String> = asked
        .and_then(|c| c.drop.as_ref())
        .map(|d| d.iter().map(name).collect())
        .unwrap_or_default();
    let mut set: Vec<String> = if drop.iter().any(|d| d == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for add in asked.and_then(|c| c.add.as_ref()).into_iter().flatten() {
        let add = name(add);
        if !set.contains(&add) {
            set.push(add);
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Capabilities;

    #[test]
    fn capabilities_follow_the_security_context() {
        assert_eq!(capabilities(None).len(), DEFAULT_CAPABILITIES.len());
        let all = Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(vec!["NET_BIND_SERVICE".into()]),
        };
        assert_eq!(capabilities(Some(&all)), vec!["CAP_NET_BIND_SERVICE"]);
        let some = Capabilities {
            drop: Some(vec!["NET_RAW".into()]),
            add: None,
        };
        assert!(!capabilities(Some(&some)).contains(&"CAP_NET_RAW".to_string()));
    }
}
