//! A Sandbox's own token (`spec.gateway.generateToken`): 32 random bytes, made by the operator
//! once, kept in a Secret the Sandbox owns, and known elsewhere only by its sha256. The hash
//! rides on the Secret as an annotation too, so the operator finds it again with a metadata
//! read. The one time the operator reads the token itself is to sign what it tells a
//! checkpointing pod's supervisor ([`read`]); it keeps no copy.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, Secret, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use super::context::Context;
use crate::api::{GatewayTokenStatus, SANDBOX_LABEL, Sandbox};
use crate::controller::Error;
use crate::distribution::sha256_hex;

/// The annotation on the Secret with the token's sha256.
pub const HASH_ANNOTATION: &str = "sandman.dev/token-sha256";

/// The Secret's data key that holds the token.
pub const KEY: &str = "token";

/// The name of the Secret that holds a Sandbox's token.
pub fn secret_name(sandbox: &str) -> String {
    format!("sandman-token-{sandbox}")
}

/// A container variable `name` that the kubelet fills with the token from the Secret `secret`,
/// so the token itself never sits in the pod's spec; the pod does not start without it.
pub fn env_var(name: &str, secret: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// What the Sandbox's token Secret is, as far as one reconcile knows.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSeen {
    /// The Sandbox asks for no token of its own.
    NotWanted,
    /// The status records it: nothing is asked of the API server.
    Recorded(GatewayTokenStatus),
    /// The Secret exists and is this Sandbox's; its hash.
    Found(GatewayTokenStatus),
    /// There is none yet: this one is to be made.
    ToMake(Box<Secret>, GatewayTokenStatus),
    /// A Secret of that name exists and is someone else's.
    Foreign(String),
}

impl TokenSeen {
    /// The status to record, once the Secret is there.
    pub fn status(&self) -> Option<GatewayTokenStatus> {
        match self {
            Self::Recorded(s) | Self::Found(s) | Self::ToMake(_, s) => Some(s.clone()),
            Self::NotWanted | Self::Foreign(_) => None,
        }
    }
}

/// A token is made for a Sandbox that asks for one for the gateway, for every Sandbox with
/// the in-Sandbox runtime, which never answers without one, and for every Sandbox whose
/// memory is checkpointed, whose supervisor takes only requests signed with it.
fn wanted(sandbox: &Sandbox) -> bool {
    sandbox
        .spec
        .gateway
        .as_ref()
        .is_some_and(|g| g.enabled && g.generate_token)
        || crate::api::RuntimeSpec::wanted(sandbox)
        || super::checkpointing::supervised(sandbox)
}

/// The Sandbox's token itself, read from its Secret to sign a supervisor request: only from a
/// Secret this Sandbox owns whose token has the hash `recorded` (what the status records, or is
/// about to), so a Secret replaced behind the operator's back signs nothing.
pub async fn read(
    ctx: &Context,
    sandbox: &Sandbox,
    recorded: Option<&GatewayTokenStatus>,
) -> Result<String, Error> {
    let name = secret_name(&sandbox.name_any());
    let recorded = recorded
        .filter(|t| t.secret == name)
        .map(|t| t.sha256.clone())
        .ok_or_else(|| {
            Error::Token(format!(
                "no token is recorded for Sandbox {}",
                sandbox.name_any()
            ))
        })?;
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    let secret = api
        .get_opt(&name)
        .await
        .map_err(Error::child("get", "Secret", &name))?
        .ok_or_else(|| Error::Token(format!("the token Secret {name} is gone")))?;
    let ours = secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == sandbox.uid().as_ref());
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .and_then(|t| String::from_utf8(t.0.clone()).ok())
        .filter(|t| ours && sha256_hex(t.as_bytes()) == recorded)
        .ok_or_else(|| {
            Error::Token(format!(
                "Secret {name} does not hold the token recorded for this Sandbox"
            ))
        })?;
    Ok(token)
}

/// What the token Secret is: from the status when it records one (a token is made once), else
/// from the Secret's metadata.
pub async fn see(ctx: &Context, sandbox: &Sandbox) -> Result<TokenSeen, Error> {
    if !wanted(sandbox) {
        return Ok(TokenSeen::NotWanted);
    }
    let name = secret_name(&sandbox.name_any());
    // A resume that restores signs with the token: the Secret itself is looked at then, so one
    // deleted meanwhile is made again rather than holding the resume for good.
    let restoring = super::checkpointing::pending_restore(sandbox).is_some();
    if let Some(recorded) = sandbox
        .status
        .as_ref()
        .and_then(|s| s.gateway_token.clone())
        .filter(|t| t.secret == name && !restoring)
    {
        return Ok(TokenSeen::Recorded(recorded));
    }
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    let existing = api
        .get_metadata_opt(&name)
        .await
        .map_err(Error::child("get", "Secret", &name))?;
    Ok(match existing {
        None => {
            let token = fresh_token()?;
            let status = GatewayTokenStatus {
                secret: name,
                sha256: sha256_hex(token.as_bytes()),
            };
            TokenSeen::ToMake(Box::new(desired_secret(sandbox, &token, &status)), status)
        }
        Some(meta) => {
            let ours = meta
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == sandbox.uid().as_ref());
            match meta.annotations().get(HASH_ANNOTATION) {
                Some(hash) if ours => TokenSeen::Found(GatewayTokenStatus {
                    secret: name,
                    sha256: hash.clone(),
                }),
                _ => TokenSeen::Foreign(name),
            }
        }
    })
}

/// Makes the Secret. One that appeared since it was seen is an error, so the status never
/// records a hash of a token nobody kept; the next reconcile sees the one that is there.
pub async fn make(ctx: &Context, sandbox: &Sandbox, secret: &Secret) -> Result<(), Error> {
    let name = secret.name_any();
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &sandbox.namespace().unwrap_or_default());
    api.create(
        &PostParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..Default::default()
        },
        secret,
    )
    .await
    .map(|_| ())
    .map_err(Error::child("create", "Secret", &name))
}

fn desired_secret(sandbox: &Sandbox, token: &str, status: &GatewayTokenStatus) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(status.secret.clone()),
            namespace: sandbox.namespace(),
            labels: Some(BTreeMap::from([(
                SANDBOX_LABEL.to_string(),
                sandbox.name_any(),
            )])),
            annotations: Some(BTreeMap::from([(
                HASH_ANNOTATION.to_string(),
                status.sha256.clone(),
            )])),
            owner_references: sandbox.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        immutable: Some(true),
        ..Default::default()
    }
}

/// 32 bytes from the operating system, as hex.
fn fresh_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Token(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_the_secret_keeps_only_its_hash_in_metadata() {
        let (a, b) = (fresh_token().expect("a"), fresh_token().expect("b"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let mut sandbox = Sandbox::new("agent", Default::default());
        sandbox.metadata.namespace = Some("tenant".into());
        sandbox.metadata.uid = Some("uid-1".into());
        let status = GatewayTokenStatus {
            secret: secret_name("agent"),
            sha256: sha256_hex(a.as_bytes()),
        };
        let secret = desired_secret(&sandbox, &a, &status);
        assert_eq!(secret.name_any(), "sandman-token-agent");
        assert_eq!(
            secret.annotations().get(HASH_ANNOTATION),
            Some(&status.sha256)
        );
        assert!(
            !secret.annotations().values().any(|v| v.contains(&a)),
            "the token itself is in data only"
        );
        assert_eq!(
            secret.owner_references()[0].uid,
            "uid-1",
            "owned by the Sandbox, so it goes with it"
        );
    }
}
