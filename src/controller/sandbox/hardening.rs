//! Hardened pod defaults, applied only where the template says nothing, so a platform policy or
//! an explicit template value always wins.
//!
//! | where | default |
//! |---|---|
//! | pod | `automountServiceAccountToken: false` |
//! | pod | `securityContext.seccompProfile.type: RuntimeDefault` (unless a container sets its own) |
//! | every container | `securityContext.allowPrivilegeEscalation: false` (unless `privileged: true`) |
//! | every container | `securityContext.capabilities.drop: [ALL]` |

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};

pub fn harden(spec: &mut PodSpec) {
    spec.automount_service_account_token.get_or_insert(false);

    let containers_choose_seccomp = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .is_some_and(|s| s.seccomp_profile.is_some())
        });
    let pod_context = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    if pod_context.seccomp_profile.is_none() && !containers_choose_seccomp {
        pod_context.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
    }

    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        harden_container(container);
    }
}

fn harden_container(container: &mut Container) {
    let context = container
        .security_context
        .get_or_insert_with(SecurityContext::default);
    // The API server rejects allowPrivilegeEscalation=false together with privileged=true.
    if context.privileged != Some(true) {
        context.allow_privilege_escalation.get_or_insert(false);
    }
    let capabilities = context
        .capabilities
        .get_or_insert_with(Capabilities::default);
    if capabilities.drop.is_none() {
        capabilities.drop = Some(vec!["ALL".into()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    #[test]
    fn empty_template_gets_every_default() {
        let mut spec = PodSpec {
            containers: vec![container("agent")],
            ..Default::default()
        };
        harden(&mut spec);
        assert_eq!(spec.automount_service_account_token, Some(false));
        let seccomp = spec
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"));
        let context = spec.containers[0]
            .security_context
            .as_ref()
            .expect("context");
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(
            context.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
    }

    #[test]
    fn explicit_template_values_win() {
        let mut agent = container("agent");
        agent.security_context = Some(SecurityContext {
            privileged: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                drop: Some(vec![]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        });
        let mut spec = PodSpec {
            automount_service_account_token: Some(true),
            containers: vec![agent],
            ..Default::default()
        };
        harden(&mut spec);
        assert_eq!(spec.automount_service_account_token, Some(true));
        let context = spec.containers[0]
            .security_context
            .as_ref()
            .expect("context");
        assert_eq!(
            context.allow_privilege_escalation, None,
            "privileged keeps escalation unset"
        );
        assert_eq!(
            context.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec![])
        );
        let pod_seccomp = spec
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.clone());
        assert_eq!(
            pod_seccomp, None,
            "a container's own seccomp profile is left alone"
        );
    }
}
