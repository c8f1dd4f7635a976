//! The NetworkPolicies sandman keeps, pure: one per template (its `networkPolicy`), and one per
//! Sandbox whose isolation policy chose a network profile. Both deny by default: ingress only
//! from the gateway's pods (in the gateway's namespace, on the gateway port) and what is
//! allowed besides; egress only to DNS and what is allowed besides.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::{GatewaySpec, SANDBOX_LABEL, Sandbox};
use crate::policy::types::NetworkProfile;

/// The labels of `sandman gateway`'s pods, as the chart sets them.
pub const GATEWAY_POD_LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/name", "sandman"),
    ("app.kubernetes.io/component", "gateway"),
];

/// The labels of the operator's pods, as the chart sets them.
pub const OPERATOR_POD_LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/name", "sandman"),
    ("app.kubernetes.io/component", "operator"),
];

/// A default-deny NetworkPolicy and what it allows.
pub struct DefaultDeny<'a> {
    pub name: String,
    pub namespace: Option<String>,
    /// The pods it covers, and the labels it carries.
    pub selector: BTreeMap<String, String>,
    pub owner: Option<OwnerReference>,
    /// The port the gateway forwards to, when the gateway may reach the pods.
    pub gateway_port: Option<u16>,
    pub gateway_namespace: &'a str,
    pub ingress: Vec<NetworkPolicyIngressRule>,
    pub egress: Vec<NetworkPolicyEgressRule>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

/// Lets in the pods of one of sandman's components (by their labels) from `namespace`, on
/// `port` (on every port when none).
fn from_component(
    pod_labels: &[(&str, &str)],
    namespace: &str,
    port: Option<u16>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("kubernetes.io/metadata.name", namespace)])),
                match_expressions: None,
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels(pod_labels)),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: port.map(|p| vec![tcp(p)]),
    }
}

pub fn default_deny(policy: DefaultDeny) -> NetworkPolicy {
    let from_gateway = from_component(
        &GATEWAY_POD_LABELS,
        policy.gateway_namespace,
        policy.gateway_port,
    );
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("k8s-app", "kube-dns")])),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: Some(
            ["UDP", "TCP"]
                .into_iter()
                .map(|protocol| NetworkPolicyPort {
                    port: Some(IntOrString::Int(53)),
                    protocol: Some(protocol.into()),
                    end_port: None,
                })
                .collect(),
        ),
    };
    // The operator asks a supervising pod for checkpoints (`docs/checkpoint.md`); only such a
    // pod listens on that port. The operator runs where the gateway does unless told otherwise.
    // Every default-deny policy lets it in, a template's as a Sandbox's, or a checkpoint of a
    // Sandbox under one would time out into a plain suspend.
    let from_operator = from_component(
        &OPERATOR_POD_LABELS,
        policy.gateway_namespace,
        Some(crate::checkpoint::SUPERVISOR_PORT),
    );
    let mut ingress = vec![from_gateway, from_operator];
    ingress.extend(policy.ingress);
    let mut egress = vec![dns];
    egress.extend(policy.egress);
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(policy.name),
            namespace: policy.namespace,
            labels: Some(policy.selector.clone()),
            owner_references: policy.owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(policy.selector),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// The NetworkPolicy of a Sandbox whose isolation policy chose a network profile.
pub fn sandbox_policy_name(sandbox: &str) -> String {
    format!("sandman-sandbox-{sandbox}")
}

/// The NetworkPolicy for `sandbox` under `profile`: its pod only, owned by the Sandbox.
pub fn sandbox_policy(
    sandbox: &Sandbox,
    profile: &NetworkProfile,
    gateway_namespace: &str,
) -> NetworkPolicy {
    let name = sandbox.name_any();
    let mut ingress = Vec::new();
    if !profile.ingress_ports.is_empty() {
        // From anywhere, on these ports only.
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(profile.ingress_ports.iter().copied().map(tcp).collect()),
        });
    }
    let egress = if profile.egress_cidrs.is_empty() {
        Vec::new()
    } else {
        vec![NetworkPolicyEgressRule {
            to: Some(
                profile
                    .egress_cidrs
                    .iter()
                    .map(|cidr| NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: cidr.clone(),
                            except: None,
                        }),
                        namespace_selector: None,
                        pod_selector: None,
                    })
                    .collect(),
            ),
            ports: None,
        }]
    };
    default_deny(DefaultDeny {
        name: sandbox_policy_name(&name),
        namespace: sandbox.namespace(),
        selector: labels(&[(SANDBOX_LABEL, &name)]),
        owner: sandbox.controller_owner_ref(&()),
        gateway_port: GatewaySpec::target_port(sandbox),
        gateway_namespace,
        ingress,
        egress,
    })
}

/// Whether `existing` is the policy sandman would write now (what it allows, whom it covers,
/// and that it is the Sandbox's).
pub fn in_place(existing: &NetworkPolicy, desired: &NetworkPolicy) -> bool {
    existing.spec == desired.spec
        && existing.metadata.labels == desired.metadata.labels
        && existing.metadata.owner_references == desired.metadata.owner_references
}

/// Whether `existing` is this Sandbox's own (its controller owner is the Sandbox): only then
/// does sandman change or delete it.
pub fn owned_by(existing: &NetworkPolicy, sandbox: &Sandbox) -> bool {
    let uid = sandbox.uid();
    existing
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_allows_the_gateway_the_operator_its_ports_and_its_cidrs_only() {
        let mut sandbox = Sandbox::new("agent", Default::default());
        sandbox.metadata.namespace = Some("team".into());
        sandbox.metadata.uid = Some("uid-1".into());
        let profile = NetworkProfile {
            ingress_ports: vec![9000],
            egress_cidrs: vec!["10.0.0.0/8".into()],
        };
        let policy = sandbox_policy(&sandbox, &profile, "sandman-system");
        assert_eq!(
            policy.metadata.name.as_deref(),
            Some("sandman-sandbox-agent")
        );
        assert!(owned_by(&policy, &sandbox));
        let spec = policy.spec.expect("spec");
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels),
            Some(labels(&[(SANDBOX_LABEL, "agent")]))
        );
        let ingress = spec.ingress.expect("ingress");
        assert_eq!(
            ingress.len(),
            3,
            "the gateway, the operator (checkpoints), then the profile's ports"
        );
        assert!(ingress[0].from.is_some());
        let operator = ingress[1].from.as_ref().map(|from| &from[0]);
        assert_eq!(
            operator
                .and_then(|peer| peer.pod_selector.as_ref())
                .and_then(|s| s.match_labels.clone()),
            Some(labels(&OPERATOR_POD_LABELS))
        );
        assert_eq!(
            ingress[1].ports,
            Some(vec![tcp(crate::checkpoint::SUPERVISOR_PORT)])
        );
        assert_eq!(ingress[2].ports, Some(vec![tcp(9000)]));
        let egress = spec.egress.expect("egress");
        assert_eq!(egress.len(), 2, "DNS, then the profile's CIDRs");
        assert_eq!(
            egress[1]
                .to
                .as_ref()
                .and_then(|t| t[0].ip_block.as_ref())
                .map(|b| b.cidr.as_str()),
            Some("10.0.0.0/8")
        );
    }
}
