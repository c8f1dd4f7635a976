//! Rules about the pod as a whole: host namespaces, volumes, scheduling, the Secrets it names
//! and the annotations that older kubelets read as security profiles.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};

use super::{Finding, SecretKind, Secrets};
use crate::api::PodPrivilege;

/// The volume types the restricted profile allows. `hostPath` is judged on its own; anything
/// else, including a type newer than this list, needs `OtherVolumeTypes`.
const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

pub(super) fn findings(spec: &PodSpec, secrets: &Secrets) -> Vec<Finding> {
    let mut found = Vec::new();
    for (set, privilege, what) in [
        (spec.host_network, PodPrivilege::HostNetwork, "hostNetwork"),
        (spec.host_pid, PodPrivilege::HostPid, "hostPID"),
        (spec.host_ipc, PodPrivilege::HostIpc, "hostIPC"),
    ] {
        if set == Some(true) {
            found.push(Finding::new(privilege, format!("{what}: true")));
        }
    }
    for volume in spec.volumes.iter().flatten() {
        found.extend(volume_findings(volume));
    }
    if spec.automount_service_account_token == Some(true) {
        found.push(Finding::new(
            PodPrivilege::ServiceAccountToken,
            "automountServiceAccountToken: true",
        ));
    }
    for (name, kind) in referenced_secrets(spec)
        .iter()
        .filter_map(|name| Some((name, secrets.get(name)?)))
    {
        let what = match kind {
            SecretKind::Plain => continue,
            SecretKind::ServiceAccountToken => {
                format!("Secret {name} is a ServiceAccount token")
            }
            SecretKind::Unknown(why) => {
                format!(
                    "Secret {name} cannot be checked ({why}), and could be a ServiceAccount token"
                )
            }
        };
        found.push(Finding::new(PodPrivilege::ServiceAccountToken, what));
    }
    found.extend(scheduling_findings(spec));
    found
}

fn volume_findings(volume: &Volume) -> Vec<Finding> {
    let name = &volume.name;
    let mut found = Vec::new();
    if let Some(path) = &volume.host_path {
        found.push(Finding::new(
            PodPrivilege::HostPath,
            format!("volume {name} mounts hostPath {}", path.path),
        ));
    }
    // Judged by the serialized form, so a volume type added to Kubernetes later is refused
    // until this list names it.
    let types = serde_json::to_value(volume)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    for kind in types.keys().filter(|k| *k != "name" && *k != "hostPath") {
        if !RESTRICTED_VOLUME_TYPES.contains(&kind.as_str()) {
            found.push(Finding::new(
                PodPrivilege::OtherVolumeTypes,
                format!("volume {name} is of type {kind}"),
            ));
        }
    }
    let projects_token = volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .is_some_and(|sources| sources.iter().any(|s| s.service_account_token.is_some()));
    if projects_token {
        found.push(Finding::new(
            PodPrivilege::ServiceAccountToken,
            format!("volume {name} projects a ServiceAccount token"),
        ));
    }
    found
}

fn scheduling_findings(spec: &PodSpec) -> Vec<Finding> {
    let mut found = Vec::new();
    if let Some(node) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        found.push(Finding::new(
            PodPrivilege::NodeName,
            format!("nodeName {node} skips the scheduler"),
        ));
    }
    let tolerates_all = spec.tolerations.iter().flatten().any(|t| {
        t.key.as_deref().unwrap_or_default().is_empty() && t.operator.as_deref() == Some("Exists")
    });
    if tolerates_all {
        found.push(Finding::new(
            PodPrivilege::TolerateAll,
            "a toleration with no key and operator Exists tolerates every taint",
        ));
    }
    if let Some(class) = spec
        .priority_class_name
        .as_ref()
        .filter(|c| c.starts_with("system-"))
    {
        found.push(Finding::new(
            PodPrivilege::SystemPriority,
            format!("priorityClassName {class}"),
        ));
    }
    found
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

/// Every Secret the pod's containers can read: secret volumes, projected secrets, env and
/// envFrom. (Image pull secrets reach the kubelet only.)
pub fn referenced_secrets(spec: &PodSpec) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for volume in spec.volumes.iter().flatten() {
        names.extend(volume.secret.as_ref().and_then(|s| s.secret_name.clone()));
        let projected = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in projected.into_iter().flatten() {
            names.extend(source.secret.as_ref().map(|s| s.name.clone()));
        }
    }
    for container in containers(spec) {
        for var in container.env.iter().flatten() {
            let reference = var
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref());
            names.extend(reference.map(|r| r.name.clone()));
        }
        for source in container.env_from.iter().flatten() {
            names.extend(source.secret_ref.as_ref().map(|r| r.name.clone()));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// The annotations that set seccomp and AppArmor profiles: the API server still copies the
/// AppArmor one into the field, so `unconfined` there is the field's `Unconfined`.
pub(super) fn annotation_findings(annotations: &Option<BTreeMap<String, String>>) -> Vec<Finding> {
    let mut found = Vec::new();
    for (key, value) in annotations.iter().flatten() {
        let seccomp = key == "seccomp.security.alpha.kubernetes.io/pod"
            || key.starts_with("container.seccomp.security.alpha.kubernetes.io/");
        if seccomp && value == "unconfined" {
            found.push(Finding::new(
                PodPrivilege::UnconfinedSeccomp,
                format!("annotation {key}: {value}"),
            ));
        }
        let confined = value == "runtime/default" || value.starts_with("localhost/");
        if key.starts_with("container.apparmor.security.beta.kubernetes.io/") && !confined {
            found.push(Finding::new(
                PodPrivilege::UnconfinedAppArmor,
                format!("annotation {key}: {value}"),
            ));
        }
    }
    found
}
