//! The checkpoint supervisor put into a Sandbox's pod (`lifecycle.checkpoint: OnSuspend` or
//! `WhenDecided`). sandman makes that container itself: its own image (`--supervisor-image`),
//! its own absolute command, an environment only it writes, and the one security context in
//! the pod that goes beyond the baseline. The tenant writes an ordinary first container; its
//! image becomes the agent's root file system (a read-only image volume), its command, env,
//! working directory and volume mounts become the agent's inside gVisor, and its ports are
//! forwarded there. The baseline judges the pod the tenant wrote, before this is done, so no
//! policy allowance is needed for checkpoints and none reaches this container.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    ImageVolumeSource, PodSpec, Probe, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use kube::ResourceExt;

use crate::api::{CheckpointMode, Sandbox};
use crate::checkpoint::signed::TOKEN_ENV;
use crate::checkpoint::{AGENT_ENV_PREFIX, SANDBOX_UID_ENV, SUPERVISOR_PORT, SUSPENSIONS_ENV};

/// Where the supervisor image holds `sandman` and `runsc` (`hack/image.sh supervisor`).
pub const SANDMAN_BINARY: &str = "/usr/local/bin/sandman";
pub const RUNSC_BINARY: &str = "/usr/local/bin/runsc";
/// The agent's image, mounted read-only as its root file system; the volume name is reserved.
pub const AGENT_VOLUME: &str = "sandman-agent";
pub const AGENT_ROOT: &str = "/.sandman/agent";
/// runsc's state (live sandboxes, never images): a scratch directory of the pod.
pub const RUNSC_VOLUME: &str = "sandman-runsc";
pub const RUNSC_ROOT: &str = "/run/sandman";
/// The images' directory under the agent's first volume.
pub const IMAGES_DIR: &str = ".sandman/checkpoints";
/// The name the control port is declared under.
pub const PORT_NAME: &str = "sandman-control";
/// Where the supervisor's container holds the in-Sandbox runtime's image, which the agent's
/// sandbox sees at [`super::runtime::MOUNT_PATH`]: the agent's root is under `/.sandman` too.
pub const RUNTIME_ROOT: &str = "/.sandman/runtime";

/// What the operator needs to make a Sandbox's supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// The supervisor image, as the operator was given it.
    pub image: String,
    /// The Secret with the Sandbox's token.
    pub secret: String,
    /// Where the images go inside the pod: under the first volume claim the container mounts.
    pub images: String,
}

/// The supervisor a Sandbox's pod gets, or why it cannot have one; `Ok(None)` when the
/// Sandbox keeps no memory.
pub fn plan(sandbox: &Sandbox, image: Option<&str>) -> Result<Option<Injection>, String> {
    let mode = sandbox.spec.lifecycle.as_ref().and_then(|l| l.checkpoint);
    if !CheckpointMode::supervised(mode) {
        return Ok(None);
    }
    let Some(image) = image.filter(|i| !i.is_empty()) else {
        return Err("lifecycle.checkpoint keeps the agent's memory, but this operator was started without --supervisor-image".into());
    };
    let spec = &sandbox.spec.pod_template.spec;
    let Some(container) = spec.containers.first() else {
        return Err("lifecycle.checkpoint, but the pod template has no container".into());
    };
    agent_fits(container)?;
    reserved(spec)?;
    let claims: Vec<String> = sandbox
        .spec
        .volume_claim_templates
        .iter()
        .filter_map(|t| t.metadata.as_ref()?.name.clone())
        .collect();
    let Some(volume) =
        container.volume_mounts.iter().flatten().find(|m| {
            claims.contains(&m.name) && m.sub_path.is_none() && m.read_only != Some(true)
        })
    else {
        return Err(format!(
            "lifecycle.checkpoint keeps images on the Sandbox's volume, and container {} mounts none of its volumeClaimTemplates (writable, whole)",
            container.name
        ));
    };
    Ok(Some(Injection {
        image: image.to_string(),
        secret: super::token::secret_name(&sandbox.name_any()),
        images: format!("{}/{IMAGES_DIR}", volume.mount_path.trim_end_matches('/')),
    }))
}

/// What the agent's container may say: sandman must know its command, and what would run
/// beside the agent rather than inside it (an exec probe or hook) is refused, not dropped.
fn agent_fits(container: &Container) -> Result<(), String> {
    let name = &container.name;
    if container.image.as_deref().is_none_or(str::is_empty) {
        return Err(format!("container {name} names no image"));
    }
    if container.command.as_ref().is_none_or(Vec::is_empty) {
        return Err(format!(
            "lifecycle.checkpoint runs container {name}'s command inside gVisor, and it names none: set its command (the image's own entrypoint is not known to sandman)"
        ));
    }
    let exec_probe = |p: &Option<Probe>| p.as_ref().is_some_and(|p| p.exec.is_some());
    let exec_hook = container.lifecycle.as_ref().is_some_and(|l| {
        l.post_start.as_ref().is_some_and(|h| h.exec.is_some())
            || l.pre_stop.as_ref().is_some_and(|h| h.exec.is_some())
    });
    if exec_probe(&container.liveness_probe)
        || exec_probe(&container.readiness_probe)
        || exec_probe(&container.startup_probe)
        || exec_hook
    {
        return Err(format!(
            "container {name} has an exec probe or hook, which would run beside the checkpointed agent, not in it: use httpGet or tcpSocket"
        ));
    }
    if container.tty == Some(true) || container.stdin == Some(true) {
        return Err(format!(
            "container {name} asks for stdin or a TTY, which the checkpointed agent does not get"
        ));
    }
    Ok(())
}

/// The names the supervisor takes in the pod.
fn reserved(spec: &PodSpec) -> Result<(), String> {
    if let Some(volume) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == AGENT_VOLUME || v.name == RUNSC_VOLUME)
    {
        return Err(format!(
            "the volume name {} is reserved for the checkpoint supervisor",
            volume.name
        ));
    }
    let taken = |path: &str| {
        let path = path.trim_end_matches('/');
        path == "/.sandman" || path.starts_with("/.sandman/") || path == RUNSC_ROOT
    };
    if let Some(mount) = spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .find(|m| taken(&m.mount_path))
    {
        return Err(format!(
            "the mount path {} is reserved for the checkpoint supervisor",
            mount.mount_path
        ));
    }
    if spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .any(|p| p.container_port == i32::from(SUPERVISOR_PORT))
    {
        return Err(format!(
            "container port {SUPERVISOR_PORT} is the checkpoint supervisor's; the pod template may not declare it"
        ));
    }
    Ok(())
}

/// Makes the pod's first container the supervisor of the agent it described (checked by
/// [`plan`]), in `sandbox`'s pod `spec`; `restore` is what the operator says to restore.
pub fn inject(spec: &mut PodSpec, sandbox: &Sandbox, injection: &Injection, restore: &[EnvVar]) {
    // Capabilities inside a user namespace are not privileges on the host.
    spec.host_users = Some(false);
    let Some(container) = spec.containers.first_mut() else {
        return;
    };
    let agent_image = container.image.take().unwrap_or_default();
    let pull_policy = container.image_pull_policy.clone();
    spec.volumes.get_or_insert_with(Vec::new).extend([
        Volume {
            name: AGENT_VOLUME.into(),
            image: Some(ImageVolumeSource {
                reference: Some(agent_image),
                pull_policy: pull_policy.or_else(|| Some("IfNotPresent".into())),
            }),
            ..Default::default()
        },
        Volume {
            name: RUNSC_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ]);
    // The runtime (`runtime::inject`, before this) wrapped the agent's command and mounted
    // its image at `/.sandman`, which `plan` refuses to any mount of the tenant's: inside
    // gVisor it is the agent's own main process, and it carries each forwarded connection.
    let runtime =
        container.volume_mounts.iter().flatten().any(|m| {
            m.name == super::runtime::VOLUME && m.mount_path == super::runtime::MOUNT_PATH
        });
    container.command = Some(command(container, injection, runtime));
    for mount in container.volume_mounts.iter_mut().flatten() {
        if runtime && mount.name == super::runtime::VOLUME {
            mount.mount_path = RUNTIME_ROOT.into();
        }
    }
    container.args = None;
    container.working_dir = None;
    container.image = Some(injection.image.clone());
    container.image_pull_policy = Some("IfNotPresent".into());
    container.env = Some(environment(container, sandbox, injection, restore));
    container.env_from = container
        .env_from
        .take()
        .map(|sources| sources.into_iter().map(agents_source).collect());
    container.security_context = Some(security_context());
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    mounts.push(VolumeMount {
        name: AGENT_VOLUME.into(),
        mount_path: AGENT_ROOT.into(),
        read_only: Some(true),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: RUNSC_VOLUME.into(),
        mount_path: RUNSC_ROOT.into(),
        ..Default::default()
    });
    container
        .ports
        .get_or_insert_with(Vec::new)
        .push(ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: i32::from(SUPERVISOR_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
}

/// `sandman supervise`, by absolute paths, with the agent's mounts and ports; the tenant's
/// command and arguments come after `--`, where they can only be the agent's. With the
/// `runtime`, its binary bridges the forwarded connections (the image need have no `nc`).
fn command(container: &Container, injection: &Injection, runtime: bool) -> Vec<String> {
    let mut command: Vec<String> = [
        SANDMAN_BINARY,
        "supervise",
        "--rootfs",
        AGENT_ROOT,
        "--images",
        &injection.images,
        "--runsc",
        RUNSC_BINARY,
        "--runsc-root",
        RUNSC_ROOT,
        // The image's runsc is a current one, which has systrap (faster than ptrace).
        "--platform",
        "systrap",
        // Without it the supervisor's own default (2 min) would cut a longer checkpointTimeout.
        "--checkpoint-timeout",
        &super::checkpointing::MAX_TIMEOUT.as_secs().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(cwd) = container.working_dir.as_ref().filter(|d| !d.is_empty()) {
        command.extend(["--cwd".to_string(), cwd.clone()]);
    }
    for mount in container.volume_mounts.iter().flatten() {
        let path = mount.mount_path.trim_end_matches('/');
        let source = if runtime && mount.name == super::runtime::VOLUME {
            RUNTIME_ROOT
        } else {
            path
        };
        command.extend(["--mount".to_string(), format!("{source}:{path}")]);
    }
    if runtime {
        command.extend([
            "--bridge".to_string(),
            format!("{} --bridge {{port}}", super::runtime::BINARY),
        ]);
    }
    for port in container.ports.iter().flatten() {
        if port.protocol.as_deref().unwrap_or("TCP") == "TCP" {
            command.extend(["--forward".to_string(), port.container_port.to_string()]);
        }
    }
    command.push("--".into());
    command.extend(container.command.clone().unwrap_or_default());
    command.extend(container.args.clone().unwrap_or_default());
    command
}

/// The supervisor's environment: what the operator says (the token from its Secret, whose pod
/// this is, how many suspensions came before it, what to restore), and the agent's own
/// variables under [`AGENT_ENV_PREFIX`], so that no name a template or claim writes (`PATH`,
/// `LD_PRELOAD`, `SANDMAN_*`) is the supervisor's own.
fn environment(
    container: &Container,
    sandbox: &Sandbox,
    injection: &Injection,
    restore: &[EnvVar],
) -> Vec<EnvVar> {
    let suspensions = sandbox.status.as_ref().map_or(0, |s| s.suspensions);
    let mut env = vec![
        super::token::env_var(TOKEN_ENV, &injection.secret),
        value(SANDBOX_UID_ENV, sandbox.uid().unwrap_or_default()),
        value(SUSPENSIONS_ENV, suspensions.to_string()),
    ];
    env.extend(restore.iter().cloned());
    env.extend(container.env.iter().flatten().map(|var| EnvVar {
        name: format!("{AGENT_ENV_PREFIX}{}", var.name),
        ..var.clone()
    }));
    env
}

fn agents_source(source: EnvFromSource) -> EnvFromSource {
    EnvFromSource {
        prefix: Some(format!(
            "{AGENT_ENV_PREFIX}{}",
            source.prefix.as_deref().unwrap_or_default()
        )),
        ..source
    }
}

fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

/// What the supervisor needs, inside the pod's user namespace (`hostUsers: false`): root
/// there; `SYS_ADMIN` (namespaces and mounts for the sandbox and its gofer, and the overlay over
/// the agent's read-only image, `checkpoint/agent_root.rs`); `DAC_OVERRIDE` (overlayfs asks it
/// of whoever mounts it, for its work directory); `SETFCAP` (runsc maps root into a user
/// namespace of its own, which a user namespace allows only to a holder of `SETFCAP`); and
/// `SETUID` and `SETGID` (that namespace maps all of the pod's 65536 ids, and mapping more than
/// one's own id takes both); nothing else. Measured on 2026-12-03 with the pinned current runsc
/// inside a runc container with a 65536-id user namespace and these five as its bounding,
/// effective and permitted sets, with systrap: the overlay, run, exec, checkpoint and restore
/// work, and each fails without its capability (`fork/exec /proc/self/exe: operation not
/// permitted` without `SETUID`, `SETGID` or `SETFCAP`; the overlay's mount `Permission
/// denied` without `DAC_OVERRIDE`; docs/checkpoint.md). A user namespace that maps one id
/// (`hack/runsc-userns.sh`) needs only `SYS_ADMIN` and `SETFCAP` of runsc. Seccomp and
/// AppArmor are unconfined, because runsc installs its own filters and makes mounts that the
/// runtimes' default profiles refuse; that is not measured against a real containerd here.
/// Each of these holds inside the user namespace: none is a privilege on the host.
/// `allowPrivilegeEscalation` stays unset: the API server refuses `false` with `SYS_ADMIN`.
fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(0),
        run_as_group: Some(0),
        run_as_non_root: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(
                ["SYS_ADMIN", "SETFCAP", "SETUID", "SETGID", "DAC_OVERRIDE"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            ),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        }),
        app_armor_profile: Some(k8s_openapi::api::core::v1::AppArmorProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "registry.local/sandman-supervisor@sha256:ab";

    fn sandbox(template: serde_json::Value) -> Sandbox {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sandman.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "agent", "namespace": "team", "uid": "uid-1"},
            "spec": {
                "lifecycle": {"checkpoint": "OnSuspend"},
                "volumeClaimTemplates": [{"metadata": {"name": "workspace"},
                    "spec": {"resources": {"requests": {"storage": "1Gi"}}}}],
                "podTemplate": {"spec": template},
            },
        }))
        .expect("a Sandbox")
    }

    fn agent() -> serde_json::Value {
        serde_json::json!({"containers": [{
            "name": "agent", "image": "registry.local/agent:1",
            "command": ["python3"], "args": ["/app/agent.py"], "workingDir": "/app",
            "ports": [{"containerPort": 8080}],
            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
            "env": [
                {"name": "PATH", "value": "/workspace/bin"},
                {"name": "LD_PRELOAD", "value": "/workspace/evil.so"},
                {"name": "SANDMAN_RESTORE_IMAGE", "value": "planted"},
                {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "k"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "securityContext": {"privileged": true},
        }]})
    }

    fn injected(sandbox: &Sandbox) -> PodSpec {
        let injection = plan(sandbox, Some(IMAGE))
            .expect("allowed")
            .expect("wanted");
        let mut spec = sandbox.spec.pod_template.spec.clone();
        inject(&mut spec, sandbox, &injection, &[]);
        spec
    }

    #[test]
    fn sandman_makes_the_supervisor_and_the_agent_image_is_its_root() {
        let spec = injected(&sandbox(agent()));
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some(IMAGE));
        let command = container.command.as_deref().expect("a command");
        assert_eq!(&command[..2], [SANDMAN_BINARY, "supervise"]);
        let agent = command.iter().position(|a| a == "--").expect("--");
        assert_eq!(&command[agent + 1..], ["python3", "/app/agent.py"]);
        for flag in [
            ["--rootfs", AGENT_ROOT],
            ["--images", "/workspace/.sandman/checkpoints"],
            ["--runsc", RUNSC_BINARY],
            ["--mount", "/workspace:/workspace"],
            ["--forward", "8080"],
            ["--cwd", "/app"],
        ] {
            assert!(
                command[..agent].windows(2).any(|w| w == flag),
                "{flag:?} in {command:?}"
            );
        }
        assert_eq!(container.args, None);
        assert_eq!(container.working_dir, None);
        let root = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == AGENT_VOLUME)
            .and_then(|v| v.image.as_ref())
            .expect("the agent's image as a volume");
        assert_eq!(root.reference.as_deref(), Some("registry.local/agent:1"));
        assert_eq!(spec.host_users, Some(false));
    }

    #[test]
    fn no_name_the_tenant_writes_is_the_supervisors_own() {
        let spec = injected(&sandbox(agent()));
        let container = &spec.containers[0];
        let names: Vec<&str> = container
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        for theirs in ["PATH", "LD_PRELOAD", "SANDMAN_RESTORE_IMAGE", "KEY"] {
            assert!(!names.contains(&theirs), "{theirs} in {names:?}");
            let prefixed = format!("{AGENT_ENV_PREFIX}{theirs}");
            assert!(
                names.contains(&prefixed.as_str()),
                "{prefixed} in {names:?}"
            );
        }
        let key = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == format!("{AGENT_ENV_PREFIX}KEY"))
            .expect("KEY");
        assert!(key.value_from.is_some(), "a reference stays a reference");
        for ours in [TOKEN_ENV, SANDBOX_UID_ENV, SUSPENSIONS_ENV] {
            assert_eq!(names.iter().filter(|n| **n == ours).count(), 1, "{ours}");
        }
        let from = container.env_from.as_deref().expect("envFrom");
        assert_eq!(from[0].prefix.as_deref(), Some(AGENT_ENV_PREFIX));
    }

    #[test]
    fn the_supervisors_privilege_is_its_own_and_confined_to_its_user_namespace() {
        let spec = injected(&sandbox(agent()));
        let context = spec.containers[0]
            .security_context
            .as_ref()
            .expect("a context");
        assert_eq!(
            context.privileged,
            Some(false),
            "the template's privilege is gone"
        );
        let capabilities = context.capabilities.clone().expect("capabilities");
        assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            capabilities.add,
            Some(
                ["SYS_ADMIN", "SETFCAP", "SETUID", "SETGID", "DAC_OVERRIDE"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(context.proc_mount, None, "a masked /proc is enough");
        assert_eq!(spec.host_users, Some(false));
    }

    #[test]
    fn what_cannot_be_supervised_is_refused_and_says_why() {
        let no_image = plan(&sandbox(agent()), None).expect_err("no --supervisor-image");
        assert!(no_image.contains("--supervisor-image"), "{no_image}");
        let cases = [
            (serde_json::json!({"command": null}), "names none"),
            (
                serde_json::json!({"readinessProbe": {"exec": {"command": ["true"]}}}),
                "exec probe",
            ),
            (serde_json::json!({"volumeMounts": []}), "mounts none"),
            (
                serde_json::json!({"volumeMounts": [{"name": "workspace", "mountPath": "/workspace", "readOnly": true}]}),
                "mounts none",
            ),
            (
                serde_json::json!({"ports": [{"containerPort": 7070}]}),
                "7070",
            ),
            (
                serde_json::json!({"volumeMounts": [
                    {"name": "workspace", "mountPath": "/workspace"},
                    {"name": "workspace", "mountPath": "/.sandman/x"}]}),
                "reserved",
            ),
        ];
        for (change, expected) in cases {
            let mut template = agent();
            for (key, value) in change.as_object().expect("an object") {
                template["containers"][0][key] = value.clone();
            }
            let refused = plan(&sandbox(template), Some(IMAGE)).expect_err(expected);
            assert!(refused.contains(expected), "{expected}: {refused}");
        }
    }

    #[test]
    fn the_runtime_runs_inside_the_agents_sandbox_and_bridges_its_ports() {
        let mut with_runtime = sandbox(agent());
        with_runtime.spec.runtime =
            serde_json::from_value(serde_json::json!({"enabled": true})).expect("a runtime spec");
        let runtime = super::super::runtime::plan(&with_runtime, Some("runtime:1"), None)
            .expect("allowed")
            .expect("wanted");
        let injection = plan(&with_runtime, Some(IMAGE))
            .expect("allowed")
            .expect("wanted");
        let mut spec = with_runtime.spec.pod_template.spec.clone();
        super::super::runtime::inject(&mut spec, &runtime);
        inject(&mut spec, &with_runtime, &injection, &[]);
        let container = &spec.containers[0];
        let command = container.command.clone().expect("a command");
        let agent = command
            .iter()
            .position(|a| a == "--")
            .expect("the agent's command");
        // The runtime is the agent's main process inside gVisor, wrapping the tenant's.
        assert_eq!(
            command[agent + 1..],
            [
                "/.sandman/sandman-runtime",
                "--",
                "python3",
                "/app/agent.py"
            ]
        );
        let pair = |flag: &str, value: &str| {
            command[..agent]
                .windows(2)
                .any(|w| w[0] == flag && w[1] == value)
        };
        assert!(
            pair("--mount", "/.sandman/runtime:/.sandman"),
            "{command:?}"
        );
        assert!(pair("--forward", "49983"), "{command:?}");
        assert!(
            pair("--bridge", "/.sandman/sandman-runtime --bridge {port}"),
            "{command:?}"
        );
        // In the supervisor's own container the runtime's image sits apart from the agent's.
        let mounts: Vec<(&str, Option<bool>)> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert!(mounts.contains(&(RUNTIME_ROOT, Some(true))), "{mounts:?}");
        assert!(mounts.contains(&(AGENT_ROOT, Some(true))), "{mounts:?}");
        assert!(
            !mounts.iter().any(|(path, _)| *path == "/.sandman"),
            "{mounts:?}"
        );
        // The runtime's token reaches the agent's environment from the Secret, never as a value.
        let token = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == format!("{AGENT_ENV_PREFIX}SANDMAN_RUNTIME_TOKEN"))
            .expect("the runtime's token for the agent");
        assert!(token.value.is_none());
        assert_eq!(
            token
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|r| r.name.as_str()),
            Some("sandman-token-agent")
        );
    }

    #[test]
    fn a_sandbox_that_keeps_no_memory_gets_no_supervisor() {
        let mut plain = sandbox(agent());
        plain.spec.lifecycle = None;
        assert_eq!(plan(&plain, Some(IMAGE)), Ok(None));
    }
}
