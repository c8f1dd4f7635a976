//! The Sandboxes, pods and Services the caches hold, as types of their own. Dropping fields of
//! a `k8s_openapi` Pod still leaves every one of them in the struct (about 2.5 KiB a pod,
//! empty or not), and a Sandbox's pod template is larger still; these types are deserialized
//! straight from the watch, so what they leave out is never held at all. Of pods and Services
//! they keep the fields the reconciler reads, and give back a `Pod` or `Service` with those
//! set; of a Sandbox, the spec and status as text, parsed when a reconcile needs them. Their
//! metadata is [`LeanMeta`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{
    Pod, PodCondition, PodIP, PodSpec, PodStatus, Service, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::lean_meta::LeanMeta;
use crate::api::{Phase, Sandbox};

/// What a cache keeps of a pod: its metadata, node and runtime class, and of its status the
/// phase, IPs, Ready condition, reason and message.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedPod {
    #[serde(default)]
    pub metadata: LeanMeta,
    pub spec: Option<CachedPodSpec>,
    pub status: Option<CachedPodStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodSpec {
    pub node_name: Option<String>,
    pub runtime_class_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIP>>,
    /// Only the Ready condition is kept (see [`CachedPod::keep_ready_only`]).
    pub conditions: Option<Vec<PodCondition>>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl CachedPod {
    /// Drops every condition but Ready, which is all the reconciler reads of them (the
    /// metadata is trimmed as it is read).
    pub fn keep_ready_only(&mut self) {
        if let Some(conditions) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions.retain(|c| c.type_ == "Ready");
        }
    }

    /// The pod as the reconciler reads it: these fields set, every other one unset.
    pub fn to_pod(&self) -> Result<Pod, serde_json::Error> {
        Ok(Pod {
            metadata: self.metadata.full()?,
            spec: self.spec.as_ref().map(|spec| PodSpec {
                node_name: spec.node_name.clone(),
                runtime_class_name: spec.runtime_class_name.clone(),
                containers: Vec::new(),
                ..Default::default()
            }),
            status: self.status.as_ref().map(|status| PodStatus {
                phase: status.phase.clone(),
                pod_ip: status.pod_ip.clone(),
                pod_ips: status.pod_ips.clone(),
                conditions: status.conditions.clone(),
                reason: status.reason.clone(),
                message: status.message.clone(),
                ..Default::default()
            }),
        })
    }
}

/// What a cache keeps of a Service: its metadata, and of its spec what the reconciler
/// compares (the selector, cluster IP and `publishNotReadyAddresses`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedService {
    #[serde(default)]
    pub metadata: LeanMeta,
    /// A [`CachedServiceSpec`] as JSON text: the selector is a map.
    #[serde(default, deserialize_with = "as_optional_text::<CachedServiceSpec, _>")]
    spec: Option<Box<str>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct CachedServiceSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<bool>,
}

impl CachedService {
    /// The Service as the reconciler reads it: these fields set, every other one unset.
    pub fn to_service(&self) -> Result<Service, serde_json::Error> {
        let spec = self
            .spec
            .as_deref()
            .map(serde_json::from_str::<CachedServiceSpec>)
            .transpose()?;
        Ok(Service {
            metadata: self.metadata.full()?,
            spec: spec.map(|spec| ServiceSpec {
                selector: spec.selector,
                cluster_ip: spec.cluster_ip,
                publish_not_ready_addresses: spec.publish_not_ready_addresses,
                ..Default::default()
            }),
            status: None,
        })
    }
}

/// What the Sandbox cache keeps: its metadata, and its spec and status as their compact JSON
/// text. A `SandboxSpec` is 1.7 KiB before its pod template's first `Container` (2.1 KiB more),
/// and a `SandboxStatus` 1 KiB before its strings, however little of them is set; their text is
/// a few hundred bytes. Both are parsed when a reconcile needs them, which is cheap beside the
/// API calls a reconcile makes.
#[derive(Clone, Debug, Deserialize)]
pub struct CachedSandbox {
    #[serde(default)]
    pub metadata: LeanMeta,
    #[serde(deserialize_with = "as_text::<serde_json::Value, _>")]
    spec: Box<str>,
    #[serde(default, deserialize_with = "as_optional_text::<serde_json::Value, _>")]
    status: Option<Box<str>>,
}

/// Compact JSON text of `value`.
fn text_of<T: Serialize, E: serde::de::Error>(value: &T) -> Result<Box<str>, E> {
    serde_json::to_string(value)
        .map(String::into_boxed_str)
        .map_err(E::custom)
}

/// Reads a field as a `T` (what of it `T` names) and keeps that as compact JSON text.
fn as_text<'de, T, D>(deserializer: D) -> Result<Box<str>, D::Error>
where
    T: Deserialize<'de> + Serialize,
    D: serde::Deserializer<'de>,
{
    text_of(&T::deserialize(deserializer)?)
}

/// The same for a field that may be null or missing.
fn as_optional_text<'de, T, D>(deserializer: D) -> Result<Option<Box<str>>, D::Error>
where
    T: Deserialize<'de> + Serialize,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer)?
        .as_ref()
        .map(text_of)
        .transpose()
}

/// The one field of a status the phase gauges read.
#[derive(Deserialize)]
struct PhaseOnly {
    phase: Option<Phase>,
}

impl CachedSandbox {
    /// The Sandbox whole, its spec and status parsed. The API server has checked both against
    /// the CRD's schema, so a failure here is a schema sandman's types do not follow.
    pub fn to_sandbox(&self) -> Result<Sandbox, serde_json::Error> {
        Ok(Sandbox {
            metadata: self.metadata.full()?,
            spec: serde_json::from_str(&self.spec)?,
            status: self
                .status
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
        })
    }

    /// Its status's phase, read without the rest of the status; none when it has no status
    /// or one sandman's types cannot read.
    pub fn phase(&self) -> Option<Phase> {
        let status = self.status.as_deref()?;
        serde_json::from_str::<PhaseOnly>(status).ok()?.phase
    }
}

/// A label of a child the Sandbox controller watches, whichever type its cache holds.
pub trait Labelled {
    fn label(&self, key: &str) -> Option<String>;
}

/// Cached types, whose labels are in their [`LeanMeta`]; full types, whose labels are in
/// their `ObjectMeta`.
macro_rules! labelled {
    (lean: $($cached:ty),*; full: $($full:ty),*) => {
        $(impl Labelled for $cached {
            fn label(&self, key: &str) -> Option<String> {
                self.metadata.label(key)
            }
        })*
        $(impl Labelled for $full {
            fn label(&self, key: &str) -> Option<String> {
                kube::Resource::meta(self).labels.as_ref()?.get(key).cloned()
            }
        })*
    };
}

labelled!(
    lean: CachedPod, CachedService;
    full:
    k8s_openapi::api::core::v1::PersistentVolumeClaim,
    k8s_openapi::api::networking::v1::NetworkPolicy
);

/// Makes a cached type the API resource `Full` is to kube: same kind, group, version and
/// path, so it is listed and watched as one.
macro_rules! same_resource_as {
    ($cached:ty, $full:ty) => {
        impl kube::Resource for $cached {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                <$full as kube::Resource>::kind(&())
            }
            fn group(_: &()) -> Cow<'_, str> {
                <$full as kube::Resource>::group(&())
            }
            fn version(_: &()) -> Cow<'_, str> {
                <$full as kube::Resource>::version(&())
            }
            fn plural(_: &()) -> Cow<'_, str> {
                <$full as kube::Resource>::plural(&())
            }
            // The identity fields only: labels and the rest are in the lean metadata's text.
            fn meta(&self) -> &ObjectMeta {
                self.metadata.identity()
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                self.metadata.identity_mut()
            }
        }
    };
}

same_resource_as!(CachedPod, Pod);
same_resource_as!(CachedService, Service);
same_resource_as!(CachedSandbox, Sandbox);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn a_cached_pod_keeps_what_the_reconciler_reads() {
        let mut cached: CachedPod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "s", "namespace": "team", "labels": {"sandman.dev/sandbox": "s"},
                "managedFields": [{"manager": "sandman", "operation": "Apply"}],
            },
            "spec": {
                "nodeName": "node-1", "runtimeClassName": "gvisor",
                "containers": [{"name": "agent", "image": "agent:1", "env": [{"name": "A", "value": "b"}]}],
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                "hostIP": "192.0.2.1", "qosClass": "Burstable", "reason": "r", "message": "m",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                ],
                "containerStatuses": [{"name": "agent", "image": "agent:1", "imageID": "", "ready": true, "restartCount": 0}],
            },
        }))
        .expect("a pod");
        cached.keep_ready_only();
        assert_eq!(cached.label("sandman.dev/sandbox").as_deref(), Some("s"));
        let pod = cached.to_pod().expect("its text parses");
        assert_eq!(pod.metadata.name.as_deref(), Some("s"));
        assert_eq!(pod.metadata.managed_fields, None);
        assert_eq!(
            pod.metadata
                .labels
                .and_then(|l| l.get("sandman.dev/sandbox").cloned()),
            Some("s".to_string())
        );
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert!(spec.containers.is_empty());
        let status = pod.status.expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(status.pod_ips.map(|ips| ips.len()), Some(1));
        assert_eq!(
            (status.reason.as_deref(), status.message.as_deref()),
            (Some("r"), Some("m"))
        );
        let kept: Vec<String> = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(kept, ["Ready"]);
        assert_eq!(status.qos_class, None);
        assert_eq!(status.host_ip, None);
        assert_eq!(status.container_statuses, None);
    }

    #[test]
    fn a_cached_service_keeps_what_is_compared() {
        let cached: CachedService = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "team", "managedFields": [{"manager": "x"}]},
            "spec": {
                "selector": {"sandman.dev/sandbox": "s"}, "clusterIP": "None",
                "publishNotReadyAddresses": true, "ports": [{"port": 80}],
            },
            "status": {"loadBalancer": {}},
        }))
        .expect("a Service");
        let service = cached.to_service().expect("its text parses");
        assert_eq!(service.metadata.managed_fields, None);
        let spec = service.spec.expect("spec");
        assert_eq!(spec.selector.map(|s| s.len()), Some(1));
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.ports, None);
        assert_eq!(service.status, None);
    }

    #[test]
    fn cached_types_are_listed_and_watched_as_the_full_ones() {
        assert_eq!(
            CachedPod::url_path(&(), Some("team")),
            Pod::url_path(&(), Some("team"))
        );
        assert_eq!(
            CachedService::url_path(&(), Some("team")),
            Service::url_path(&(), Some("team"))
        );
        assert_eq!(CachedPod::api_version(&()), "v1");
        assert_eq!(CachedPod::kind(&()), "Pod");
    }

    #[test]
    fn a_cached_sandbox_gives_back_the_sandbox_it_was_read_from() {
        let json = serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {
                "name": "s", "namespace": "team", "resourceVersion": "7",
                "labels": {"sandman.dev/template": "t"}, "finalizers": ["sandman.dev/x"],
            },
            "spec": {
                "podTemplate": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}},
                "operatingMode": "Suspended",
                "shutdownTime": "2026-12-04T00:00:00Z",
            },
            "status": {"phase": "Suspended", "suspensions": 2},
        });
        let full: Sandbox = serde_json::from_value(json.clone()).expect("a Sandbox");
        let cached: CachedSandbox = serde_json::from_value(json).expect("a cached Sandbox");
        let back = cached.to_sandbox().expect("its spec parses");
        assert_eq!(
            serde_json::to_value(&back).expect("JSON"),
            serde_json::to_value(&full).expect("JSON")
        );
        assert!(cached.spec.len() < 200, "{}", cached.spec);
        assert_eq!(cached.phase(), Some(Phase::Suspended));
        assert_eq!(
            cached.meta().labels,
            None,
            "labels are in the lean metadata's text"
        );
        assert_eq!(
            CachedSandbox::url_path(&(), Some("team")),
            Sandbox::url_path(&(), Some("team"))
        );
    }

    #[test]
    fn a_spec_sandmans_types_cannot_read_is_an_error_not_a_default() {
        let cached: CachedSandbox = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {"podTemplate": {"spec": {"containers": "not a list"}}},
        }))
        .expect("the cache takes any spec");
        assert!(cached.to_sandbox().is_err());
        let cached: CachedSandbox = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {"podTemplate": {"spec": {"containers": []}}},
            "status": {"phase": "Dreaming"},
        }))
        .expect("the cache takes any status");
        assert!(cached.to_sandbox().is_err());
        assert_eq!(cached.phase(), None);
    }

    /// The reason these types exist: each cached pod holds a fraction of a full one.
    #[test]
    fn a_cached_pod_is_a_fraction_of_a_full_one() {
        let full = std::mem::size_of::<Pod>();
        let cached = std::mem::size_of::<CachedPod>();
        assert!(
            cached * 2 < full,
            "CachedPod {cached} bytes, Pod {full} bytes"
        );
    }
}
