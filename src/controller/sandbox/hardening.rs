//! Hardened pod defaults, applied only where the template says nothing, so that a template
//! that says nothing makes a pod Pod Security's `restricted` profile admits. What a template
//! says explicitly is left as it is here and judged by the pod baseline.
//!
//! | where | default |
//! |---|---|
//! | pod | `automountServiceAccountToken: false` |
//! | pod | `securityContext.seccompProfile.type: RuntimeDefault` (a container's own profile wins) |
//! | pod | `securityContext.runAsNonRoot: true` (unless the template names root anywhere) |
//! | every container | `securityContext.allowPrivilegeEscalation: false` (unless `privileged: true`) |
//! | every container | `securityContext.capabilities.drop: [ALL]` |

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};

pub fn harden(spec: &mut PodSpec) {
    spec.automount_service_account_token.get_or_insert(false);

    let names_root = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(|c| c.security_context.as_ref())
        .any(|s| s.run_as_user == Some(0) || s.run_as_non_root == Some(false));
    let pod_context = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    if pod_context.seccomp_profile.is_none() {
        pod_context.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
    }
    // A template that runs something as root says so; then the baseline judges it, and a
    // hardened `runAsNonRoot` would only make the kubelet refuse what a policy allowed.
    if pod_context.run_as_non_root.is_none() && pod_context.run_as_user != Some(0) && !names_root {
        pod_context.run_as_non_root = Some(true);
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
        let non_root = spec
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root);
        assert_eq!(non_root, Some(true));
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
    fn a_template_that_names_root_gets_no_non_root_default() {
        let mut agent = container("agent");
        agent.security_context = Some(SecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        });
        let mut spec = PodSpec {
            containers: vec![agent],
            ..Default::default()
        };
        harden(&mut spec);
        let non_root = spec
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root);
        assert_eq!(non_root, None);
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
        assert_eq!(
            context.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("Unconfined"),
            "a container's own seccomp profile is left alone (the baseline judges it)"
        );
    }
}
