//! The in-Sandbox runtime in a Sandbox's pod (`spec.runtime.enabled`): the runtime image as a
//! read-only image volume, mounted into the first container, whose own command the runtime
//! wraps; the Sandbox's token from its Secret; and the runtime's port. The runtime gets no
//! capability, user or volume the container does not already have.

use k8s_openapi::api::core::v1::{ContainerPort, ImageVolumeSource, PodSpec, Volume, VolumeMount};
use kube::ResourceExt;

use crate::api::{RUNTIME_PORT, RuntimeSpec, Sandbox};

/// The volume and the mount point of the runtime; both names are reserved.
pub const VOLUME: &str = "sandman-runtime";
pub const MOUNT_PATH: &str = "/.sandman";
/// The runtime's path inside the container, under the mount.
pub const BINARY: &str = "/.sandman/sandman-runtime";
/// The variable the runtime reads its token from; a template's own value is replaced.
pub const TOKEN_VARIABLE: &str = "SANDMAN_RUNTIME_TOKEN";
/// The container port the runtime is declared on.
pub const PORT_NAME: &str = "sandman-runtime";

/// What the operator puts into a pod for the runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// The image holding `/sandman-runtime`, as the operator was given it.
    pub image: String,
    /// The Secret with the Sandbox's token.
    pub secret: String,
}

/// The runtime a Sandbox gets, or why it cannot have it; `Ok(None)` when it asks for none.
pub fn plan(
    sandbox: &Sandbox,
    image: Option<&str>,
    exempted: Option<&(String, Vec<String>)>,
) -> Result<Option<Injection>, String> {
    if !RuntimeSpec::wanted(sandbox) {
        return Ok(None);
    }
    // Whoever holds the token runs commands with the container's rights: a container that a
    // policy let past the baseline (the checkpoint supervisor, say) would hand its privileges
    // to them.
    if let Some((policy, allowed)) = exempted {
        return Err(format!(
            "spec.runtime.enabled, but policy {policy} lets this pod past the baseline ({}); the runtime would give those privileges to every holder of the token",
            allowed.join(", ")
        ));
    }
    // A Sandbox that checkpoints gets the runtime too: `supervisor::inject` then runs it inside
    // the agent's gVisor sandbox as the agent's main process, so commands see the agent and are
    // checkpointed and restored with it, and none runs with the supervisor's capabilities.
    let Some(image) = image.filter(|i| !i.is_empty()) else {
        return Err(
            "spec.runtime.enabled, but this operator was started without --runtime-image".into(),
        );
    };
    let spec = &sandbox.spec.pod_template.spec;
    let Some(container) = spec.containers.first() else {
        return Err("spec.runtime.enabled, but the pod template has no container".into());
    };
    if container.command.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(format!(
            "spec.runtime.enabled wraps the first container's command, and container {} names none: set its command (the image's own entrypoint is not known to sandman)",
            container.name
        ));
    }
    if spec.volumes.iter().flatten().any(|v| v.name == VOLUME) {
        return Err(format!(
            "the volume name {VOLUME} is reserved for the runtime"
        ));
    }
    if spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.mount_path.trim_end_matches('/') == MOUNT_PATH)
    {
        return Err(format!(
            "the mount path {MOUNT_PATH} is reserved for the runtime"
        ));
    }
    if spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .any(|p| p.container_port == i32::from(RUNTIME_PORT))
    {
        return Err(format!(
            "container port {RUNTIME_PORT} is the runtime's; the pod template may not declare it"
        ));
    }
    Ok(Some(Injection {
        image: image.to_string(),
        secret: super::token::secret_name(&sandbox.name_any()),
    }))
}

/// Puts the runtime into `spec`, whose first container has a command (checked by [`plan`]).
pub fn inject(spec: &mut PodSpec, injection: &Injection) {
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME.into(),
        image: Some(ImageVolumeSource {
            reference: Some(injection.image.clone()),
            pull_policy: Some("IfNotPresent".into()),
        }),
        ..Default::default()
    });
    let Some(container) = spec.containers.first_mut() else {
        return;
    };
    let mut command = vec![BINARY.to_string(), "--".to_string()];
    command.extend(container.command.take().unwrap_or_default());
    command.extend(container.args.take().unwrap_or_default());
    container.command = Some(command);
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: VOLUME.into(),
            mount_path: MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        });
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != TOKEN_VARIABLE);
    env.push(super::token::env_var(TOKEN_VARIABLE, &injection.secret));
    container
        .ports
        .get_or_insert_with(Vec::new)
        .push(ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: i32::from(RUNTIME_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(template: serde_json::Value) -> Sandbox {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "agent", "namespace": "team"},
            "spec": {"runtime": {"enabled": true}, "podTemplate": {"spec": template}},
        }))
        .expect("a Sandbox")
    }

    #[test]
    fn the_runtime_wraps_the_named_command_and_takes_the_sandbox_token() {
        let sandbox = sandbox(serde_json::json!({"containers": [{
            "name": "agent", "image": "python:3.12-slim",
            "command": ["sleep"], "args": ["infinity"],
            "env": [{"name": TOKEN_VARIABLE, "value": "chosen-by-the-tenant"}],
        }]}));
        let injection = plan(&sandbox, Some("registry.local/runtime@sha256:ab"), None)
            .expect("allowed")
            .expect("wanted");
        let mut spec = sandbox.spec.pod_template.spec.clone();
        inject(&mut spec, &injection);
        let container = &spec.containers[0];
        assert_eq!(
            container.command.as_deref().expect("a command"),
            [BINARY, "--", "sleep", "infinity"]
        );
        assert_eq!(container.args, None);
        let token: Vec<_> = container
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == TOKEN_VARIABLE)
            .collect();
        assert_eq!(token.len(), 1, "the tenant's own value is replaced");
        let secret = token[0]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("from the Secret");
        assert_eq!(secret.name, "sandman-token-agent");
        let mount = &container.volume_mounts.as_ref().expect("mounts")[0];
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (MOUNT_PATH, Some(true))
        );
        let volume = &spec.volumes.as_ref().expect("volumes")[0];
        assert_eq!(
            volume.image.as_ref().and_then(|i| i.reference.as_deref()),
            Some("registry.local/runtime@sha256:ab")
        );
    }

    #[test]
    fn what_the_runtime_cannot_wrap_or_would_collide_with_is_refused() {
        let image = Some("runtime:1");
        let none = None;
        let no_command = sandbox(serde_json::json!({"containers": [{"name": "a", "image": "x"}]}));
        assert!(
            plan(&no_command, image, none)
                .expect_err("refused")
                .contains("names none")
        );
        let named =
            serde_json::json!({"containers": [{"name": "a", "image": "x", "command": ["sh"]}]});
        assert!(
            plan(&sandbox(named.clone()), None, none)
                .expect_err("refused")
                .contains("--runtime-image")
        );
        let mut reserved = named.clone();
        reserved["volumes"] = serde_json::json!([{"name": VOLUME, "emptyDir": {}}]);
        assert!(
            plan(&sandbox(reserved), image, none)
                .expect_err("refused")
                .contains("reserved")
        );
        let mut port = named.clone();
        port["containers"][0]["ports"] = serde_json::json!([{"containerPort": 49983}]);
        assert!(
            plan(&sandbox(port), image, none)
                .expect_err("refused")
                .contains("49983")
        );
        let exempted = ("supervisor".to_string(), vec!["RunAsRoot".to_string()]);
        let privileged =
            plan(&sandbox(named.clone()), image, Some(&exempted)).expect_err("refused");
        assert!(
            privileged.contains("every holder of the token"),
            "{privileged}"
        );
        let mut checkpointed = sandbox(named.clone());
        checkpointed.spec.lifecycle =
            serde_json::from_value(serde_json::json!({"checkpoint": "OnSuspend"})).ok();
        assert!(
            matches!(plan(&checkpointed, image, none), Ok(Some(_))),
            "a Sandbox that checkpoints gets the runtime inside its sandbox"
        );
        let mut not_wanted = sandbox(named);
        not_wanted.spec.runtime = None;
        assert_eq!(plan(&not_wanted, None, none), Ok(None));
    }
}
