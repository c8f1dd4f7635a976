//! What sandman's caches drop from every object's metadata before holding it: nothing in
//! sandman reads these, and each can be larger than the rest of the object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `kubectl apply`'s copy of the whole object as last applied, kept in an annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops managed fields and `kubectl apply`'s last-applied copy.
pub fn trim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_metadata_keeps_what_sandman_reads() {
        let mut meta: ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "s",
            "labels": {"sandman.dev/sandbox": "s"},
            "annotations": {
                LAST_APPLIED: "{\"apiVersion\":\"sandman.dev/v1alpha1\"}",
                "sandman.dev/wake-requested-at": "2026-12-04T00:00:00Z",
            },
            "managedFields": [{"manager": "kubectl"}],
        }))
        .expect("metadata");
        trim_metadata(&mut meta);
        assert_eq!(meta.managed_fields, None);
        let annotations = meta.annotations.expect("annotations");
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["sandman.dev/wake-requested-at"]
        );
        assert_eq!(meta.labels.map(|l| l.len()), Some(1));

        let mut only_last_applied = ObjectMeta {
            annotations: Some([(LAST_APPLIED.to_string(), "{}".to_string())].into()),
            ..Default::default()
        };
        trim_metadata(&mut only_last_applied);
        assert_eq!(only_last_applied.annotations, None);
    }
}
