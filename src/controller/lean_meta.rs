//! The metadata the caches keep of each Sandbox, pod and Service. kube's store keys an object
//! on its name, namespace, uid and resourceVersion, and the reconciler reads its timestamps and
//! generation: those stay typed, in an `ObjectMeta`. Its maps and lists (labels, annotations,
//! owner references, finalizers) cost a B-tree node of about half a KiB per map however few
//! entries it has, and an allocation per string; they are kept as one compact JSON text
//! instead, and put back whole by [`LeanMeta::full`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanMeta {
    /// The metadata without labels, annotations, owner references and finalizers.
    identity: ObjectMeta,
    /// Those four as JSON; none when all are unset.
    rest: Option<Box<str>>,
}

/// The part of the metadata kept as text.
#[derive(Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finalizers: Option<Vec<String>>,
}

impl LeanMeta {
    /// `meta` as a cache keeps it: trimmed ([`crate::api::cached::trim_metadata`]), its maps
    /// and lists as text.
    pub fn new(mut meta: ObjectMeta) -> Result<Self, serde_json::Error> {
        crate::api::cached::trim_metadata(&mut meta);
        let rest = Rest {
            labels: meta.labels.take(),
            annotations: meta.annotations.take(),
            owner_references: meta.owner_references.take(),
            finalizers: meta.finalizers.take(),
        };
        let all_unset = rest.labels.is_none()
            && rest.annotations.is_none()
            && rest.owner_references.is_none()
            && rest.finalizers.is_none();
        let rest = if all_unset {
            None
        } else {
            Some(serde_json::to_string(&rest)?.into_boxed_str())
        };
        Ok(Self {
            identity: meta,
            rest,
        })
    }

    /// What kube's store and the controller key on; labels, annotations, owner references and
    /// finalizers are unset here (see [`LeanMeta::full`]).
    pub fn identity(&self) -> &ObjectMeta {
        &self.identity
    }

    pub fn identity_mut(&mut self) -> &mut ObjectMeta {
        &mut self.identity
    }

    fn rest(&self) -> Result<Rest, serde_json::Error> {
        match &self.rest {
            Some(text) => serde_json::from_str(text),
            None => Ok(Rest::default()),
        }
    }

    /// The metadata whole, as it was read (less what trimming drops). The text is this type's
    /// own writing, so a failure here is a bug, and is reported as an error, never a default.
    pub fn full(&self) -> Result<ObjectMeta, serde_json::Error> {
        let rest = self.rest()?;
        Ok(ObjectMeta {
            labels: rest.labels,
            annotations: rest.annotations,
            owner_references: rest.owner_references,
            finalizers: rest.finalizers,
            ..self.identity.clone()
        })
    }

    /// The value of label `key`, if the object has it. Asked on every watch event of a child,
    /// so only the labels are read back from the text.
    pub fn label(&self, key: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Labels {
            labels: Option<BTreeMap<String, String>>,
        }
        let text = self.rest.as_deref()?;
        serde_json::from_str::<Labels>(text)
            .ok()?
            .labels?
            .remove(key)
    }
}

impl<'de> Deserialize<'de> for LeanMeta {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let meta = ObjectMeta::deserialize(deserializer)?;
        LeanMeta::new(meta).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> serde_json::Value {
        serde_json::json!({
            "name": "s", "namespace": "team", "uid": "u-1", "resourceVersion": "7",
            "generation": 3, "creationTimestamp": "2026-12-04T00:00:00Z",
            "labels": {"sandman.dev/sandbox": "s", "team": "a"},
            "annotations": {"sandman.dev/pod-spec-hash": "abc"},
            "ownerReferences": [{
                "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox", "name": "s",
                "uid": "u-0", "controller": true, "blockOwnerDeletion": true,
            }],
            "finalizers": ["sandman.dev/cleanup"],
            "managedFields": [{"manager": "sandman", "operation": "Apply"}],
        })
    }

    #[test]
    fn lean_metadata_gives_back_what_it_was_read_from() {
        let mut full: ObjectMeta = serde_json::from_value(metadata()).expect("metadata");
        full.managed_fields = None;
        let lean: LeanMeta = serde_json::from_value(metadata()).expect("lean metadata");
        assert_eq!(lean.full().expect("its text parses"), full);
        let identity = lean.identity();
        assert_eq!(identity.name.as_deref(), Some("s"));
        assert_eq!(identity.resource_version.as_deref(), Some("7"));
        assert_eq!(identity.labels, None);
        assert_eq!(identity.owner_references, None);
        assert_eq!(lean.label("sandman.dev/sandbox").as_deref(), Some("s"));
        assert_eq!(lean.label("absent"), None);
    }

    #[test]
    fn metadata_without_maps_holds_no_text() {
        let lean: LeanMeta =
            serde_json::from_value(serde_json::json!({"name": "s"})).expect("lean metadata");
        assert_eq!(lean.rest, None);
        assert_eq!(lean.full().expect("full").name.as_deref(), Some("s"));
        assert_eq!(lean.label("sandman.dev/sandbox"), None);
    }
}
