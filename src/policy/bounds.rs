//! What a policy may hand back to the host. A decision is copied onto a pod and into status, so
//! its size is the API server's problem too: one decision with 600,000 empty tolerations once
//! took an API server to 7.7 GB. Every list a pod receives has a sane maximum, the decision as a
//! whole has a byte budget in which every item costs something (so empty items are not free),
//! and the quantities a pod receives must parse.

use super::error::PolicyError;
use super::types::{
    ComputeResources, IsolationDecision, LifecycleDecision, PoolDecision, ResourcesDecision,
};

/// Node-selector pairs, tolerations and per-container entries a decision may carry. Far above
/// what a real platform needs (a handful), far below what hurts an API server.
pub const MAX_LIST_ITEMS: usize = 64;

/// The longest `reason` a decision may give; it lands in status and in Events.
pub const MAX_REASON_BYTES: usize = 1024;

/// What one list item costs in the byte budget besides its strings: the API server's
/// per-field overhead is of this order, and it makes empty items count.
const ITEM_BYTES: usize = 32;

/// The longest error text of a guest the host keeps; the rest is cut, and the cut is said.
pub const MAX_GUEST_ERROR_BYTES: usize = 1024;

fn opt(text: &Option<String>) -> usize {
    text.as_ref().map_or(0, String::len)
}

fn check_list(what: &str, len: usize) -> Result<(), PolicyError> {
    if len > MAX_LIST_ITEMS {
        return Err(PolicyError::InvalidDecision(format!(
            "{what} has {len} entries; at most {MAX_LIST_ITEMS} are allowed"
        )));
    }
    Ok(())
}

fn check_reason(reason: &str) -> Result<(), PolicyError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(PolicyError::InvalidDecision(format!(
            "reason is {} bytes; at most {MAX_REASON_BYTES} are allowed",
            reason.len()
        )));
    }
    Ok(())
}

fn check_budget(size: usize, limit: usize) -> Result<(), PolicyError> {
    if size > limit {
        return Err(PolicyError::OutputTooLarge { size, limit });
    }
    Ok(())
}

/// Checks an isolation decision against the list bounds and the byte budget `limit`.
pub fn check_isolation(decision: &IsolationDecision, limit: usize) -> Result<(), PolicyError> {
    check_list("nodeSelector", decision.node_selector.len())?;
    check_list("tolerations", decision.tolerations.len())?;
    check_reason(&decision.reason)?;
    let network = match &decision.network {
        Some(profile) => {
            check_list("network.ingressPorts", profile.ingress_ports.len())?;
            check_list("network.egressCidrs", profile.egress_cidrs.len())?;
            if profile.ingress_ports.contains(&0) {
                return Err(PolicyError::InvalidDecision(
                    "network.ingressPorts: 0 is not a port".into(),
                ));
            }
            // The host writes these into a NetworkPolicy: refuse what the API server would.
            if let Some(bad) = profile
                .egress_cidrs
                .iter()
                .find(|c| c.parse::<ipnet::IpNet>().is_err())
            {
                return Err(PolicyError::InvalidDecision(format!(
                    "network.egressCidrs: {bad:?} is not a CIDR"
                )));
            }
            profile
                .egress_cidrs
                .iter()
                .map(|c| ITEM_BYTES + c.len())
                .sum::<usize>()
                + profile.ingress_ports.len() * ITEM_BYTES
        }
        None => 0,
    };
    let pairs: usize = decision
        .node_selector
        .iter()
        .map(|(k, v)| ITEM_BYTES + k.len() + v.len())
        .sum();
    let tolerations: usize = decision
        .tolerations
        .iter()
        .map(|t| ITEM_BYTES + opt(&t.key) + opt(&t.operator) + opt(&t.value) + opt(&t.effect))
        .sum();
    let size = opt(&decision.runtime_class_name)
        + opt(&decision.security.seccomp_profile)
        + decision.reason.len()
        + pairs
        + tolerations
        + network;
    check_budget(size, limit)
}

/// Checks a resources decision: list bounds, byte budget, and that every default and cap is a
/// Kubernetes quantity (the host compares with them and copies them onto the pod).
pub fn check_resources(decision: &ResourcesDecision, limit: usize) -> Result<(), PolicyError> {
    check_list("containers", decision.containers.len())?;
    check_reason(&decision.reason)?;
    let quantities =
        |r: &ComputeResources| opt(&r.cpu) + opt(&r.memory) + opt(&r.ephemeral_storage);
    let size = decision
        .containers
        .iter()
        .map(|c| ITEM_BYTES + opt(&c.container) + quantities(&c.defaults) + quantities(&c.caps))
        .sum::<usize>()
        + decision.reason.len();
    check_budget(size, limit)?;
    for entry in &decision.containers {
        for (kind, resources) in [("defaults", &entry.defaults), ("caps", &entry.caps)] {
            for (name, value) in [
                ("cpu", &resources.cpu),
                ("memory", &resources.memory),
                ("ephemeralStorage", &resources.ephemeral_storage),
            ] {
                let Some(text) = value else { continue };
                match sandman_policy_wire::quantity::value(text) {
                    Ok(v) if v >= 0.0 => {}
                    _ => {
                        return Err(PolicyError::InvalidDecision(format!(
                            "{kind}.{name} {text:?} is not a non-negative Kubernetes quantity"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks a lifecycle decision: its reason goes into Events.
pub fn check_lifecycle(decision: &LifecycleDecision, limit: usize) -> Result<(), PolicyError> {
    check_reason(&decision.reason)?;
    check_budget(decision.reason.len(), limit)
}

/// A pool's size is bounded by the pool's own `maxReplicas` where it is applied; here only
/// its reason is.
pub fn check_pool(decision: &PoolDecision, limit: usize) -> Result<(), PolicyError> {
    check_reason(&decision.reason)?;
    check_budget(decision.reason.len(), limit)
}

/// A guest's error text, cut to [`MAX_GUEST_ERROR_BYTES`] at a character boundary. A 28 MB
/// error once made every status write fail with 413, so the real reason never showed.
pub fn guest_error(text: String) -> String {
    crate::text::clip(text, MAX_GUEST_ERROR_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::{ContainerResources, SecurityOverrides, Toleration};

    fn isolation(tolerations: usize) -> IsolationDecision {
        IsolationDecision {
            runtime_class_name: Some("gvisor".into()),
            security: SecurityOverrides {
                run_as_non_root: None,
                run_as_user: None,
                read_only_root_filesystem: None,
                allow_privilege_escalation: None,
                host_users: None,
                seccomp_profile: None,
            },
            node_selector: Vec::new(),
            tolerations: (0..tolerations)
                .map(|_| Toleration {
                    key: None,
                    operator: None,
                    value: None,
                    effect: None,
                })
                .collect(),
            network: None,
            reason: "r".into(),
        }
    }

    #[test]
    fn empty_tolerations_are_not_free() {
        assert!(check_isolation(&isolation(3), 64 << 10).is_ok());
        let error = check_isolation(&isolation(600_000), 64 << 10)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("tolerations has 600000 entries"), "{error}");
        // Within the count, the budget still counts each item.
        assert!(matches!(
            check_isolation(&isolation(MAX_LIST_ITEMS), 100),
            Err(PolicyError::OutputTooLarge { .. })
        ));
    }

    #[test]
    fn resources_quantities_must_parse() {
        let decision = |cap: &str| ResourcesDecision {
            containers: vec![ContainerResources {
                container: None,
                defaults: ComputeResources {
                    cpu: None,
                    memory: None,
                    ephemeral_storage: None,
                },
                caps: ComputeResources {
                    cpu: Some(cap.into()),
                    memory: None,
                    ephemeral_storage: None,
                },
            }],
            reason: "caps".into(),
        };
        assert!(check_resources(&decision("2"), 64 << 10).is_ok());
        assert!(check_resources(&decision("1500m"), 64 << 10).is_ok());
        for bad in ["two", "-1", "1.2.3"] {
            assert!(
                matches!(
                    check_resources(&decision(bad), 64 << 10),
                    Err(PolicyError::InvalidDecision(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn long_reasons_and_errors_are_bounded() {
        let mut decision = isolation(0);
        decision.reason = "x".repeat(MAX_REASON_BYTES + 1);
        assert!(matches!(
            check_isolation(&decision, usize::MAX),
            Err(PolicyError::InvalidDecision(_))
        ));
        let error = guest_error("é".repeat(20 << 20));
        assert!(error.len() < MAX_GUEST_ERROR_BYTES + 64, "{}", error.len());
        assert!(error.ends_with("more bytes cut)"), "{error}");
    }

    #[test]
    fn log_lines_cannot_forge_other_lines() {
        let forged = crate::text::one_line(
            "fine\n2026-01-01T00:00:00Z ERROR sandman: operator compromised\x1b[2J",
        );
        assert!(
            !forged.contains('\n') && !forged.contains('\x1b'),
            "{forged}"
        );
        assert!(forged.contains("\\n2026"), "{forged}");
    }
}
