//! The pod baseline: what a Sandbox may ask of its pod. The pod template is the user's, and
//! creating a Sandbox must not amount to creating any pod at all (privileged, on the host's
//! network, with the node's root filesystem mounted). Pure: a pod spec and the allowance of the
//! isolation policy that decided it go in, the refusals come out.
//!
//! | refused unless allowed | how it is allowed |
//! |---|---|
//! | `hostNetwork`, `hostPID`, `hostIPC` | `HostNetwork`, `HostPID`, `HostIPC` |
//! | `hostPath` volumes | `HostPath` |
//! | container `hostPort`s | `HostPorts` |
//! | `privileged: true` | `Privileged` |
//! | added capabilities other than `NET_BIND_SERVICE` | `capabilities: [NAME]` |
//! | `automountServiceAccountToken: true`, projected ServiceAccount tokens | `ServiceAccountToken` |

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::api::{PodPrivilege, PodSecurityAllowance};

/// Added capabilities every pod may have: Pod Security's restricted profile allows it too.
const ALWAYS_ALLOWED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// What the pod asks for that the baseline refuses, one sentence each; empty when it may run.
pub fn refusals(spec: &PodSpec, allowance: &PodSecurityAllowance) -> Vec<String> {
    let allowed = |privilege: PodPrivilege| allowance.allow.contains(&privilege);
    let mut refused = Vec::new();
    for (set, privilege, what) in [
        (spec.host_network, PodPrivilege::HostNetwork, "hostNetwork"),
        (spec.host_pid, PodPrivilege::HostPid, "hostPID"),
        (spec.host_ipc, PodPrivilege::HostIpc, "hostIPC"),
    ] {
        if set == Some(true) && !allowed(privilege) {
            refused.push(format!("{what}: true"));
        }
    }
    if !allowed(PodPrivilege::HostPath) {
        for volume in spec.volumes.iter().flatten() {
            if let Some(path) = &volume.host_path {
                refused.push(format!(
                    "volume {} mounts hostPath {}",
                    volume.name, path.path
                ));
            }
        }
    }
    if !allowed(PodPrivilege::ServiceAccountToken) {
        if spec.automount_service_account_token == Some(true) {
            refused.push("automountServiceAccountToken: true".into());
        }
        for volume in spec.volumes.iter().flatten() {
            let projects_token = volume
                .projected
                .as_ref()
                .and_then(|p| p.sources.as_ref())
                .is_some_and(|sources| sources.iter().any(|s| s.service_account_token.is_some()));
            if projects_token {
                refused.push(format!(
                    "volume {} projects a ServiceAccount token",
                    volume.name
                ));
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        refused.extend(container_refusals(container, allowance));
    }
    refused
}

fn container_refusals(container: &Container, allowance: &PodSecurityAllowance) -> Vec<String> {
    let name = &container.name;
    let mut refused = Vec::new();
    let context = container.security_context.as_ref();
    if context.and_then(|c| c.privileged) == Some(true)
        && !allowance.allow.contains(&PodPrivilege::Privileged)
    {
        refused.push(format!("container {name} is privileged"));
    }
    let added = context
        .and_then(|c| c.capabilities.as_ref())
        .and_then(|c| c.add.as_ref());
    for capability in added.into_iter().flatten() {
        let bare = capability.trim_start_matches("CAP_");
        let permitted = ALWAYS_ALLOWED_CAPABILITIES.contains(&bare)
            || allowance
                .capabilities
                .iter()
                .any(|c| c.trim_start_matches("CAP_") == bare);
        if !permitted {
            refused.push(format!("container {name} adds capability {capability}"));
        }
    }
    if !allowance.allow.contains(&PodPrivilege::HostPorts) {
        for port in container.ports.iter().flatten() {
            if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
                refused.push(format!("container {name} binds hostPort {host_port}"));
            }
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, ContainerPort, HostPathVolumeSource, ProjectedVolumeSource, SecurityContext,
        ServiceAccountTokenProjection, Volume, VolumeProjection,
    };

    fn hostile() -> PodSpec {
        PodSpec {
            host_network: Some(true),
            host_pid: Some(true),
            automount_service_account_token: Some(true),
            volumes: Some(vec![
                Volume {
                    name: "root".into(),
                    host_path: Some(HostPathVolumeSource {
                        path: "/".into(),
                        type_: None,
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "token".into(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                path: "token".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            containers: vec![Container {
                name: "agent".into(),
                ports: Some(vec![ContainerPort {
                    container_port: 80,
                    host_port: Some(80),
                    ..Default::default()
                }]),
                security_context: Some(SecurityContext {
                    privileged: Some(true),
                    capabilities: Some(Capabilities {
                        add: Some(vec!["SYS_ADMIN".into(), "NET_BIND_SERVICE".into()]),
                        drop: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn every_host_privilege_is_refused_by_default() {
        let refused = refusals(&hostile(), &PodSecurityAllowance::default());
        for expected in [
            "hostNetwork: true",
            "hostPID: true",
            "volume root mounts hostPath /",
            "automountServiceAccountToken: true",
            "volume token projects a ServiceAccount token",
            "container agent is privileged",
            "container agent adds capability SYS_ADMIN",
            "container agent binds hostPort 80",
        ] {
            assert!(
                refused.iter().any(|r| r == expected),
                "{expected} in {refused:?}"
            );
        }
        assert!(
            !refused.iter().any(|r| r.contains("NET_BIND_SERVICE")),
            "{refused:?}"
        );
    }

    #[test]
    fn an_allowance_lets_exactly_what_it_names_through() {
        let allowance = PodSecurityAllowance {
            allow: vec![
                PodPrivilege::HostNetwork,
                PodPrivilege::HostPid,
                PodPrivilege::HostPath,
                PodPrivilege::Privileged,
                PodPrivilege::HostPorts,
                PodPrivilege::ServiceAccountToken,
            ],
            capabilities: vec!["CAP_SYS_ADMIN".into()],
        };
        assert_eq!(refusals(&hostile(), &allowance), Vec::<String>::new());
        let partial = PodSecurityAllowance {
            allow: vec![PodPrivilege::HostPath],
            capabilities: Vec::new(),
        };
        let refused = refusals(&hostile(), &partial);
        assert!(
            !refused.iter().any(|r| r.contains("hostPath")),
            "{refused:?}"
        );
        assert!(
            refused.iter().any(|r| r.contains("SYS_ADMIN")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_plain_pod_passes() {
        let spec = PodSpec {
            containers: vec![Container {
                name: "agent".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(refusals(&spec, &PodSecurityAllowance::default()).is_empty());
    }
}
