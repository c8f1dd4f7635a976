//! Who an API key is, and what it may do: the API server decides both. A key is a Kubernetes
//! bearer token; a `TokenReview` says whose it is, and a `SubjectAccessReview` whether that
//! identity may act on `SandboxClaims` in its namespace. Only ServiceAccount tokens are keys:
//! their namespace is where their Sandboxes live, so no key reaches across namespaces, however
//! much RBAC its identity has elsewhere.
//!
//! Both reviews are cached for a short while (a key's answer by its SHA-256, never the key), so
//! an SDK's burst of calls costs the API server one review of each kind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use super::ControlError;

/// How long a review's answer is reused. Short, so a revoked token or a removed RoleBinding
/// stops working within seconds.
pub const REVIEW_TTL: Duration = Duration::from_secs(10);
/// Answers kept at most per cache; a full cache drops its expired answers, then all of them.
const MAX_CACHED: usize = 10_000;

/// A key's identity: the ServiceAccount the API server says it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// The ServiceAccount's namespace: the only one its calls reach.
    pub namespace: String,
}

/// What a control call does to claims, as an RBAC verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Create,
    Get,
    List,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// The gateway's reviews of API keys, made with its own identity (which may create
/// `tokenreviews` and `subjectaccessreviews`, and nothing here beyond that).
pub struct Reviews {
    client: kube::Client,
    identities: Cache<[u8; 32], Result<Caller, ControlError>>,
    access: Cache<(Caller, Verb), bool>,
}

impl Reviews {
    pub fn new(client: kube::Client) -> Self {
        Reviews {
            client,
            identities: Cache::default(),
            access: Cache::default(),
        }
    }

    /// Whose `key` is: 401 for a key the API server does not know, 403 for one that is not a
    /// ServiceAccount's.
    pub async fn identify(&self, key: &str) -> Result<Caller, ControlError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(known) = self.identities.get(&digest) {
            return known;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: key.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                // Not cached: the next call asks again.
                ControlError::new(StatusCode::BAD_GATEWAY, format!("review the API key: {e}"))
            })?;
        let answer = caller_of(&reviewed);
        self.identities.put(digest, answer.clone());
        answer
    }

    /// Whether `caller` may `verb` SandboxClaims in its namespace; 403 naming what it lacks.
    pub async fn authorize(&self, caller: &Caller, verb: Verb) -> Result<(), ControlError> {
        let key = (caller.clone(), verb);
        let allowed = match self.access.get(&key) {
            Some(allowed) => allowed,
            None => {
                let allowed = self.review_access(caller, verb).await?;
                self.access.put(key, allowed);
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(ControlError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may not {} sandboxclaims.sandman.dev in namespace {}",
                    caller.user,
                    verb.as_str(),
                    caller.namespace
                ),
            ))
        }
    }

    async fn review_access(&self, caller: &Caller, verb: Verb) -> Result<bool, ControlError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.user.clone()),
                uid: Some(caller.uid.clone()),
                groups: Some(caller.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("sandman.dev".into()),
                    resource: Some("sandboxclaims".into()),
                    namespace: Some(caller.namespace.clone()),
                    verb: Some(verb.as_str().into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                ControlError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("review the key's access: {e}"),
                )
            })?;
        Ok(reviewed
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

/// The caller a reviewed token belongs to.
fn caller_of(review: &TokenReview) -> Result<Caller, ControlError> {
    let status = review.status.clone().unwrap_or_default();
    let user = match (status.authenticated, status.user) {
        (Some(true), Some(user)) => user,
        _ => {
            return Err(ControlError::new(
                StatusCode::UNAUTHORIZED,
                "invalid API key: the API server does not accept it as a token",
            ));
        }
    };
    let name = user.username.unwrap_or_default();
    let Some(namespace) = service_account_namespace(&name) else {
        return Err(ControlError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{name} is not a ServiceAccount: an API key must be a ServiceAccount's token, \
                 whose namespace is where its Sandboxes live"
            ),
        ));
    };
    Ok(Caller {
        namespace: namespace.to_string(),
        user: name.clone(),
        uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
    })
}

/// `ns` of `system:serviceaccount:ns:name`.
fn service_account_namespace(user: &str) -> Option<&str> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some(namespace)
}

/// Answers that expire after [`REVIEW_TTL`].
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Cache<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < REVIEW_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED {
            entries.retain(|_, (at, _)| at.elapsed() < REVIEW_TTL);
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_accounts_have_a_namespace() {
        assert_eq!(
            service_account_namespace("system:serviceaccount:team-a:framework"),
            Some("team-a")
        );
        for not in [
            "admin",
            "system:serviceaccount:team-a",
            "system:serviceaccount::x",
            "system:serviceaccount:team-a:",
            "system:serviceaccount:a:b:c",
            "system:node:n1",
        ] {
            assert_eq!(service_account_namespace(not), None, "{not}");
        }
    }

    #[test]
    fn an_unauthenticated_review_is_a_401_and_a_user_a_403() {
        let review = |authenticated: bool, name: &str| TokenReview {
            status: Some(k8s_openapi::api::authentication::v1::TokenReviewStatus {
                authenticated: Some(authenticated),
                user: Some(k8s_openapi::api::authentication::v1::UserInfo {
                    username: Some(name.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = |r: Result<Caller, ControlError>| r.map_err(|e| e.status).err();
        assert_eq!(
            status(caller_of(&review(false, "system:serviceaccount:a:b"))),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(caller_of(&review(true, "kubernetes-admin"))),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            caller_of(&review(true, "system:serviceaccount:a:b")).map(|c| c.namespace),
            Ok("a".to_string())
        );
    }

    #[test]
    fn cached_answers_expire() {
        let cache: Cache<u8, bool> = Cache::default();
        cache.put(1, true);
        assert_eq!(cache.get(&1), Some(true));
        cache
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&1)
            .expect("cached")
            .0 -= REVIEW_TTL;
        assert_eq!(cache.get(&1), None);
    }
}
