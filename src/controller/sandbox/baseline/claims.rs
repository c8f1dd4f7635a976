//! Rules about PVC templates: a claim is made for this Sandbox, so it may not name a volume or
//! a source that exists already. `volumeName` binds an Available PV that may have been left for
//! someone else, and `dataSource`/`dataSourceRef` clone another claim or snapshot.

use k8s_openapi::api::core::v1::PersistentVolumeClaimTemplate;

use super::Finding;
use crate::api::PodPrivilege;

pub(super) fn findings(templates: &[PersistentVolumeClaimTemplate]) -> Vec<Finding> {
    let mut found = Vec::new();
    for template in templates {
        let name = template
            .metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .unwrap_or_default();
        let spec = &template.spec;
        if let Some(volume) = spec.volume_name.as_ref().filter(|v| !v.is_empty()) {
            found.push(Finding::new(
                PodPrivilege::ForeignVolumes,
                format!("volume claim template {name} names volume {volume}"),
            ));
        }
        let sources = [
            spec.data_source
                .as_ref()
                .map(|s| (s.kind.as_str(), s.name.as_str())),
            spec.data_source_ref
                .as_ref()
                .map(|s| (s.kind.as_str(), s.name.as_str())),
        ];
        // Both are set alike by the API server when one is given: one finding is enough.
        if let Some((kind, source)) = sources.into_iter().flatten().next() {
            found.push(Finding::new(
                PodPrivilege::ForeignVolumes,
                format!("volume claim template {name} is cloned from {kind} {source}"),
            ));
        }
    }
    found
}
