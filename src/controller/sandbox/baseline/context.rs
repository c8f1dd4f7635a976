//! Rules about security contexts, at pod level and in every container and init container:
//! the restricted profile's users, privilege, capabilities, profiles and sysctls.

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, PodSpec, SELinuxOptions, SeccompProfile,
    WindowsSecurityContextOptions,
};

use super::{ALWAYS_ALLOWED_CAPABILITIES, Exemption, Finding};
use crate::api::PodPrivilege;

/// SELinux types a container may run as (the restricted profile's list).
const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Kubernetes' safe sysctls: namespaced, and unable to reach other pods or the node.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The settings that both a pod's and a container's security context carry.
struct Shared<'a> {
    /// "pod" or "container NAME".
    who: String,
    run_as_non_root: Option<bool>,
    run_as_user: Option<i64>,
    se_linux: Option<&'a SELinuxOptions>,
    seccomp: Option<&'a SeccompProfile>,
    app_armor: Option<&'a AppArmorProfile>,
    windows: Option<&'a WindowsSecurityContextOptions>,
}

pub(super) fn findings(spec: &PodSpec) -> Vec<Finding> {
    let pod = spec.security_context.as_ref();
    let mut found = shared_findings(&Shared {
        who: "pod".into(),
        run_as_non_root: pod.and_then(|c| c.run_as_non_root),
        run_as_user: pod.and_then(|c| c.run_as_user),
        se_linux: pod.and_then(|c| c.se_linux_options.as_ref()),
        seccomp: pod.and_then(|c| c.seccomp_profile.as_ref()),
        app_armor: pod.and_then(|c| c.app_armor_profile.as_ref()),
        windows: pod.and_then(|c| c.windows_options.as_ref()),
    });
    for sysctl in pod.and_then(|c| c.sysctls.as_ref()).into_iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.replace('/', ".").as_str()) {
            found.push(Finding::new(
                PodPrivilege::UnsafeSysctls,
                format!("sysctl {} is not one of the safe set", sysctl.name),
            ));
        }
    }
    let pod_non_root = pod.and_then(|c| c.run_as_non_root);
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        found.extend(container_findings(container, pod_non_root));
    }
    found
}

fn shared_findings(context: &Shared) -> Vec<Finding> {
    let who = &context.who;
    let mut found = Vec::new();
    if context.run_as_non_root == Some(false) {
        found.push(Finding::new(
            PodPrivilege::RunAsRoot,
            format!("{who} sets runAsNonRoot: false"),
        ));
    }
    if context.run_as_user == Some(0) {
        found.push(Finding::new(
            PodPrivilege::RunAsRoot,
            format!("{who} sets runAsUser: 0"),
        ));
    }
    if let Some(options) = context.se_linux {
        let kind = options.type_.as_deref().unwrap_or_default();
        let user_or_role = [&options.user, &options.role]
            .iter()
            .any(|v| v.as_deref().is_some_and(|v| !v.is_empty()));
        if (!kind.is_empty() && !SELINUX_TYPES.contains(&kind)) || user_or_role {
            found.push(Finding::new(
                PodPrivilege::SeLinuxOptions,
                format!("{who} sets SELinux options beyond a container type"),
            ));
        }
    }
    if context.seccomp.is_some_and(|p| p.type_ == "Unconfined") {
        found.push(Finding::new(
            PodPrivilege::UnconfinedSeccomp,
            format!("{who} sets seccomp profile Unconfined"),
        ));
    }
    if context.app_armor.is_some_and(|p| p.type_ == "Unconfined") {
        found.push(Finding::new(
            PodPrivilege::UnconfinedAppArmor,
            format!("{who} sets AppArmor profile Unconfined"),
        ));
    }
    if context.windows.and_then(|w| w.host_process) == Some(true) {
        found.push(Finding::new(
            PodPrivilege::Privileged,
            format!("{who} is a Windows hostProcess"),
        ));
    }
    found
}

fn container_findings(container: &Container, pod_non_root: Option<bool>) -> Vec<Finding> {
    let name = &container.name;
    let context = container.security_context.as_ref();
    let mut found = shared_findings(&Shared {
        who: format!("container {name}"),
        run_as_non_root: context.and_then(|c| c.run_as_non_root),
        run_as_user: context.and_then(|c| c.run_as_user),
        se_linux: context.and_then(|c| c.se_linux_options.as_ref()),
        seccomp: context.and_then(|c| c.seccomp_profile.as_ref()),
        app_armor: context.and_then(|c| c.app_armor_profile.as_ref()),
        windows: context.and_then(|c| c.windows_options.as_ref()),
    });
    // Neither level says non-root (an explicit false is already a finding above).
    if pod_non_root.is_none() && context.and_then(|c| c.run_as_non_root).is_none() {
        found.push(Finding::new(
            PodPrivilege::RunAsRoot,
            format!("container {name} may run as root: runAsNonRoot is not true"),
        ));
    }
    let privileged = context.and_then(|c| c.privileged) == Some(true);
    if privileged {
        found.push(Finding::new(
            PodPrivilege::Privileged,
            format!("container {name} is privileged"),
        ));
    } else if context.and_then(|c| c.allow_privilege_escalation) != Some(false) {
        found.push(Finding::new(
            PodPrivilege::PrivilegeEscalation,
            format!("container {name} allows privilege escalation"),
        ));
    }
    if context
        .and_then(|c| c.proc_mount.as_deref())
        .is_some_and(|m| m != "Default")
    {
        found.push(Finding::new(
            PodPrivilege::UnmaskedProcMount,
            format!("container {name} sets procMount Unmasked"),
        ));
    }
    let capabilities = context.and_then(|c| c.capabilities.as_ref());
    let drops_all = capabilities
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|c| c.eq_ignore_ascii_case("ALL")));
    if !drops_all {
        found.push(Finding::new(
            PodPrivilege::KeepCapabilities,
            format!("container {name} does not drop ALL capabilities"),
        ));
    }
    let added = capabilities.and_then(|c| c.add.as_ref());
    for capability in added.into_iter().flatten() {
        let bare = capability.trim_start_matches("CAP_");
        if !ALWAYS_ALLOWED_CAPABILITIES.contains(&bare) {
            found.push(Finding {
                exemption: Exemption::Capability(bare.to_string()),
                what: format!("container {name} adds capability {capability}"),
            });
        }
    }
    for port in container.ports.iter().flatten() {
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            found.push(Finding::new(
                PodPrivilege::HostPorts,
                format!("container {name} binds hostPort {host_port}"),
            ));
        }
    }
    found
}
