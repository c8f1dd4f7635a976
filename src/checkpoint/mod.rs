//! Memory checkpoints of a Sandbox's agent (gVisor): the in-pod supervisor that runs the agent
//! under `runsc` and checkpoints it to the Sandbox's volume when asked, the images on that
//! volume, and the small protocol the operator speaks to the supervisor. The design, and why
//! it is an in-pod supervisor, is in `docs/checkpoint.md`.
//!
//! This layer knows nothing of the controller: the operator asks for a checkpoint over HTTP
//! ([`client`]) and passes what to restore in the pod's environment ([`RESTORE_IMAGE_ENV`]),
//! each signed with the Sandbox's own token ([`signed`]).

mod agent_root;
mod beneath;
mod carry;
pub mod client;
pub mod digest;
pub mod image;
pub mod runsc;
pub mod signed;
pub mod supervisor;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The port the supervisor answers the operator on, inside the pod.
pub const SUPERVISOR_PORT: u16 = 7070;

/// The image (directory name under the checkpoint directory) a new pod should restore.
pub const RESTORE_IMAGE_ENV: &str = "SANDMAN_RESTORE_IMAGE";
/// The sha256 the operator recorded for that image; anything else is not restored.
pub const RESTORE_SHA256_ENV: &str = "SANDMAN_RESTORE_SHA256";
/// The operator's signature over that restore ([`signed::restore_signature`]): without it
/// nothing is restored, whatever the other two say.
pub const RESTORE_SIGNATURE_ENV: &str = "SANDMAN_RESTORE_SIGNATURE";
/// The UID of the Sandbox the pod belongs to: an image another Sandbox took is foreign.
pub const SANDBOX_UID_ENV: &str = "SANDMAN_SANDBOX_UID";
/// How many suspensions the Sandbox had when the operator made the pod: a checkpoint request
/// for one of those (an old request, replayed) is refused.
pub const SUSPENSIONS_ENV: &str = "SANDMAN_SUSPENSIONS";
/// The agent's own variables reach the supervisor under this prefix, which it strips before
/// giving them to the agent: no name a template or claim writes is the supervisor's own.
pub const AGENT_ENV_PREFIX: &str = "SANDMAN_AGENT_ENV_";

/// What the operator asks of `POST /checkpoint`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRequest {
    /// The Sandbox's UID, recorded with the image.
    pub sandbox_uid: String,
    /// The pod the image comes from.
    pub pod: String,
    /// The suspension this checkpoint is for: asking twice for one suspension returns the
    /// image already taken rather than failing on an agent that is stopped.
    pub suspension: u64,
    /// How many images to keep on the volume, this one included.
    pub keep: u32,
    /// How long the checkpoint may take (`spec.lifecycle.checkpointTimeout`), in seconds; the
    /// supervisor's own `--checkpoint-timeout` caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// One image, as the supervisor took it (and as `meta.json` beside it says).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRecord {
    /// The image's directory name under the checkpoint directory.
    pub image: String,
    /// sha256 over the image's files (see [`image::digest`]).
    pub sha256: String,
    pub size_bytes: u64,
    pub taken_at: Timestamp,
    pub sandbox_uid: String,
    pub pod: String,
    pub suspension: u64,
    /// How long `runsc checkpoint` took, in milliseconds.
    pub took_ms: u64,
}

/// How the supervisor started the agent: `GET /status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StartReport {
    pub start: StartKind,
    /// The image restored, or the one that was asked for and refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Why a restore that was asked for became a cold start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: Timestamp,
    /// How long the start took, in milliseconds.
    pub took_ms: u64,
}

/// Restored from an image, or started afresh.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    Restored,
    ColdStart,
}

/// Why a checkpoint or a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("runsc {command}: {message}")]
    Runsc { command: String, message: String },
    #[error("the agent is not running (it {0})")]
    NotRunning(String),
    #[error("image {image}: {refusal}")]
    Refused {
        image: String,
        refusal: image::Refusal,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("supervisor at {address}: {message}")]
    Supervisor { address: String, message: String },
}

impl CheckpointError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |e| Self::Io(what, e)
    }
}
