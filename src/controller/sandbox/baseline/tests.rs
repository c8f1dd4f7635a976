use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimSpec, PersistentVolumeClaimTemplate, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::*;
use crate::controller::sandbox::hardening::harden;

/// A pod from a template, hardened as sandman makes every pod.
fn pod(spec: serde_json::Value) -> Pod {
    let mut spec: PodSpec = serde_json::from_value(spec).expect("a pod spec");
    harden(&mut spec);
    Pod {
        spec: Some(spec),
        ..Default::default()
    }
}

fn plain() -> serde_json::Value {
    json!({ "containers": [{ "name": "agent", "image": "busybox" }] })
}

fn refused(pod: &Pod) -> Vec<String> {
    judge(
        findings(pod, &[], &Secrets::new()),
        &PodSecurityAllowance::default(),
    )
    .refused
}

fn assert_refused(pod: &Pod, expected: &str) {
    let refused = refused(pod);
    assert!(
        refused.iter().any(|r| r.contains(expected)),
        "{expected:?} in {refused:?}"
    );
}

#[test]
fn a_hardened_plain_pod_passes() {
    assert_eq!(refused(&pod(plain())), Vec::<String>::new());
}

#[test]
fn every_host_privilege_is_refused_by_default() {
    let hostile = pod(json!({
        "hostNetwork": true, "hostPID": true, "hostIPC": true,
        "automountServiceAccountToken": true,
        "volumes": [
            { "name": "root", "hostPath": { "path": "/" } },
            { "name": "token", "projected": { "sources": [{ "serviceAccountToken": { "path": "t" } }] } },
        ],
        "containers": [{
            "name": "agent",
            "ports": [{ "containerPort": 80, "hostPort": 80 }],
            "securityContext": { "privileged": true,
                "capabilities": { "add": ["SYS_ADMIN", "NET_BIND_SERVICE"] } },
        }],
    }));
    for expected in [
        "hostNetwork: true",
        "hostPID: true",
        "hostIPC: true",
        "volume root mounts hostPath /",
        "automountServiceAccountToken: true",
        "volume token projects a ServiceAccount token",
        "container agent is privileged",
        "container agent adds capability SYS_ADMIN",
        "container agent binds hostPort 80",
    ] {
        assert_refused(&hostile, expected);
    }
    assert!(
        !refused(&hostile)
            .iter()
            .any(|r| r.contains("NET_BIND_SERVICE")),
        "NET_BIND_SERVICE is always allowed"
    );
}

/// Each case of the restricted profile that an explicit template value breaks, at pod and at
/// container level, init containers included.
#[test]
fn explicit_values_that_break_the_restricted_profile_are_refused() {
    let cases = [
        (
            json!({ "securityContext": { "seccompProfile": { "type": "Unconfined" } } }),
            "pod sets seccomp profile Unconfined",
        ),
        (
            json!({ "securityContext": { "appArmorProfile": { "type": "Unconfined" } } }),
            "pod sets AppArmor profile Unconfined",
        ),
        (
            json!({ "securityContext": { "seLinuxOptions": { "type": "spc_t" } } }),
            "pod sets SELinux options",
        ),
        (
            json!({ "securityContext": { "seLinuxOptions": { "user": "system_u" } } }),
            "pod sets SELinux options",
        ),
        (
            json!({ "securityContext": { "sysctls": [{ "name": "kernel.msgmax", "value": "1" }] } }),
            "sysctl kernel.msgmax",
        ),
        (
            json!({ "securityContext": { "runAsUser": 0 } }),
            "pod sets runAsUser: 0",
        ),
        (
            json!({ "securityContext": { "runAsNonRoot": false } }),
            "pod sets runAsNonRoot: false",
        ),
        (
            json!({ "securityContext": { "windowsOptions": { "hostProcess": true } } }),
            "Windows hostProcess",
        ),
        (json!({ "nodeName": "node-1" }), "nodeName node-1"),
        (
            json!({ "tolerations": [{ "operator": "Exists" }] }),
            "tolerates every taint",
        ),
        (
            json!({ "priorityClassName": "system-node-critical" }),
            "priorityClassName system-node-critical",
        ),
    ];
    for (fields, expected) in cases {
        let mut spec = plain();
        for (key, value) in fields.as_object().expect("fields") {
            spec[key] = value.clone();
        }
        assert_refused(&pod(spec), expected);
    }
}

#[test]
fn explicit_container_values_are_refused_in_init_containers_too() {
    let cases = [
        (json!({ "runAsUser": 0 }), "sets runAsUser: 0"),
        (json!({ "runAsNonRoot": false }), "sets runAsNonRoot: false"),
        (
            json!({ "allowPrivilegeEscalation": true }),
            "allows privilege escalation",
        ),
        (
            json!({ "capabilities": { "drop": [] } }),
            "does not drop ALL capabilities",
        ),
        (
            json!({ "procMount": "Unmasked" }),
            "sets procMount Unmasked",
        ),
        (
            json!({ "seccompProfile": { "type": "Unconfined" } }),
            "sets seccomp profile Unconfined",
        ),
        (
            json!({ "appArmorProfile": { "type": "Unconfined" } }),
            "sets AppArmor profile Unconfined",
        ),
        (
            json!({ "seLinuxOptions": { "role": "sysadm_r" } }),
            "sets SELinux options",
        ),
    ];
    for (context, expected) in cases {
        for field in ["containers", "initContainers"] {
            let mut spec = plain();
            spec[field] = json!([{ "name": "c", "securityContext": context.clone() }]);
            if field == "initContainers" {
                spec["containers"] = plain()["containers"].clone();
            }
            assert_refused(&pod(spec), &format!("container c {expected}"));
        }
    }
}

#[test]
fn only_the_restricted_volume_types_pass() {
    let spec = json!({
        "containers": [{ "name": "agent" }],
        "volumes": [
            { "name": "nfs", "nfs": { "server": "10.0.0.1", "path": "/" } },
            { "name": "iscsi", "iscsi": { "targetPortal": "10.0.0.1", "iqn": "iqn", "lun": 0 } },
            { "name": "git", "gitRepo": { "repository": "https://example.invalid/r" } },
            { "name": "flex", "flexVolume": { "driver": "d" } },
            { "name": "ok-empty", "emptyDir": {} },
            { "name": "ok-config", "configMap": { "name": "c" } },
            { "name": "ok-claim", "persistentVolumeClaim": { "claimName": "c" } },
        ],
    });
    let refused = refused(&pod(spec));
    for kind in ["nfs", "iscsi", "gitRepo", "flexVolume"] {
        assert!(
            refused.iter().any(|r| r.ends_with(&format!("type {kind}"))),
            "{kind} in {refused:?}"
        );
    }
    assert!(!refused.iter().any(|r| r.contains("ok-")), "{refused:?}");
}

#[test]
fn unconfined_profile_annotations_are_refused() {
    let mut pod = pod(plain());
    pod.metadata = ObjectMeta {
        annotations: Some(BTreeMap::from([
            (
                "seccomp.security.alpha.kubernetes.io/pod".to_string(),
                "unconfined".to_string(),
            ),
            (
                "container.apparmor.security.beta.kubernetes.io/agent".to_string(),
                "unconfined".to_string(),
            ),
            (
                "container.apparmor.security.beta.kubernetes.io/other".to_string(),
                "runtime/default".to_string(),
            ),
        ])),
        ..Default::default()
    };
    let refused = refused(&pod);
    assert_eq!(refused.len(), 2, "{refused:?}");
}

#[test]
fn a_secret_that_is_a_token_is_refused_whatever_the_route() {
    let spec = json!({
        "volumes": [
            { "name": "legacy", "secret": { "secretName": "legacy-token" } },
            { "name": "mixed", "projected": { "sources": [{ "secret": { "name": "projected-token" } }] } },
            { "name": "keys", "secret": { "secretName": "api-keys" } },
        ],
        "containers": [{
            "name": "agent",
            "env": [{ "name": "T", "valueFrom": { "secretKeyRef": { "name": "env-token", "key": "token" } } }],
            "envFrom": [{ "secretRef": { "name": "missing" } }],
        }],
    });
    let pod = pod(spec);
    let names = referenced_secrets(pod.spec.as_ref().expect("spec"));
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "api-keys",
            "env-token",
            "legacy-token",
            "missing",
            "projected-token"
        ]
    );
    let secrets = Secrets::from([
        ("legacy-token".into(), SecretKind::ServiceAccountToken),
        ("projected-token".into(), SecretKind::ServiceAccountToken),
        ("env-token".into(), SecretKind::ServiceAccountToken),
        ("api-keys".into(), SecretKind::Plain),
        ("missing".into(), SecretKind::Unknown("not found".into())),
    ]);
    let judged = judge(
        findings(&pod, &[], &secrets),
        &PodSecurityAllowance::default(),
    );
    assert_eq!(judged.refused.len(), 4, "{:?}", judged.refused);
    assert!(!judged.refused.iter().any(|r| r.contains("api-keys")));
}

#[test]
fn pvc_templates_may_not_name_a_volume_or_a_source() {
    let template = |spec: serde_json::Value| PersistentVolumeClaimTemplate {
        metadata: Some(ObjectMeta {
            name: Some("workspace".into()),
            ..Default::default()
        }),
        spec: serde_json::from_value::<PersistentVolumeClaimSpec>(spec).expect("claim spec"),
    };
    let templates = [
        template(json!({ "volumeName": "pv-of-someone-else" })),
        template(json!({ "dataSource": { "kind": "PersistentVolumeClaim", "name": "theirs" } })),
        template(
            json!({ "dataSourceRef": { "kind": "VolumeSnapshot", "name": "snap", "apiGroup": "snapshot.storage.k8s.io" } }),
        ),
        template(json!({ "accessModes": ["ReadWriteOnce"] })),
    ];
    let found = findings(&pod(plain()), &templates, &Secrets::new());
    let judged = judge(found.clone(), &PodSecurityAllowance::default());
    assert_eq!(judged.refused.len(), 3, "{:?}", judged.refused);
    let allowed = PodSecurityAllowance {
        allow: vec![PodPrivilege::ForeignVolumes],
        capabilities: Vec::new(),
    };
    assert_eq!(judge(found, &allowed).exempted.len(), 3);
}

#[test]
fn an_allowance_lets_exactly_what_it_names_through() {
    let root = pod(json!({
        "hostNetwork": true,
        "containers": [{ "name": "agent", "securityContext": {
            "runAsUser": 0, "capabilities": { "add": ["CAP_SYS_ADMIN"] } } }],
    }));
    let only_root = PodSecurityAllowance {
        allow: vec![PodPrivilege::RunAsRoot],
        capabilities: Vec::new(),
    };
    let judged = judge(findings(&root, &[], &Secrets::new()), &only_root);
    assert!(
        judged
            .exempted
            .iter()
            .all(|e| e.contains("root") || e.contains("runAsUser: 0")),
        "{judged:?}"
    );
    assert!(judged.exempted.len() >= 2, "{judged:?}");
    assert_eq!(
        judged.refused,
        [
            "hostNetwork: true",
            "container agent adds capability CAP_SYS_ADMIN"
        ]
    );
    let everything = PodSecurityAllowance {
        allow: vec![PodPrivilege::RunAsRoot, PodPrivilege::HostNetwork],
        capabilities: vec!["SYS_ADMIN".into()],
    };
    let judged = judge(findings(&root, &[], &Secrets::new()), &everything);
    assert_eq!(judged.refused, Vec::<String>::new());
}

#[test]
fn a_privileged_container_needs_no_escalation_exemption() {
    let privileged = pod(json!({
        "containers": [{ "name": "agent", "securityContext": { "privileged": true } }],
    }));
    let refused = refused(&privileged);
    assert_eq!(refused, ["container agent is privileged"]);
}
