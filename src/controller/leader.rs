//! Leader election on a coordination Lease, so that of several operator replicas exactly one
//! reconciles. The leader renews the Lease; a replica takes it over only once it has expired.
//! A leader that cannot renew in time stops, so that two never reconcile at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a Lease lasts without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and a candidate retries.
    pub retry: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("Lease {0}: {1}")]
    Api(String, #[source] kube::Error),
    #[error("lost the Lease {0} to {1}")]
    Lost(String, String),
}

enum Attempt {
    Held,
    HeldByOther(String),
}

impl Election {
    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self, client: &Client) -> Result<(), LeaderError> {
        let mut waiting_for: Option<String> = None;
        loop {
            match self.try_hold(client).await? {
                Attempt::Held => {
                    tracing::info!(lease = self.name, identity = self.identity, "leading");
                    return Ok(());
                }
                Attempt::HeldByOther(holder) => {
                    if waiting_for.as_ref() != Some(&holder) {
                        tracing::info!(
                            lease = self.name,
                            holder,
                            "waiting for the leader's Lease to expire"
                        );
                        waiting_for = Some(holder);
                    }
                }
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    /// Renews the Lease until it is lost; returns the error that ended leadership.
    pub async fn keep(&self, client: &Client) -> LeaderError {
        let mut last_renewed = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry).await;
            match self.try_hold(client).await {
                Ok(Attempt::Held) => last_renewed = std::time::Instant::now(),
                Ok(Attempt::HeldByOther(holder)) => {
                    return LeaderError::Lost(self.name.clone(), holder);
                }
                Err(error) => {
                    tracing::warn!(%error, "could not renew the Lease");
                    if last_renewed.elapsed() >= self.lease_duration.saturating_sub(self.retry) {
                        return error;
                    }
                }
            }
        }
    }

    /// Creates, renews or takes over the Lease, with optimistic concurrency: of two replicas
    /// that try at once, one gets a conflict.
    async fn try_hold(&self, client: &Client) -> Result<Attempt, LeaderError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let api_error = |e| LeaderError::Api(self.name.clone(), e);
        let Some(mut lease) = api.get_opt(&self.name).await.map_err(api_error)? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldByOther("?".into())),
                Err(e) => Err(api_error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expires = spec.renew_time.as_ref().map(|t| {
            t.0 + std::time::Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(0),
            )
        });
        let expired = expires.is_none_or(|e| e <= Timestamp::now());
        let ours = holder == self.identity;
        if !ours && !expired && !holder.is_empty() {
            return Ok(Attempt::HeldByOther(holder));
        }
        let mut next = spec;
        if !ours {
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(self.identity.clone());
        next.lease_duration_seconds = Some(seconds);
        next.renew_time = Some(now);
        lease.spec = Some(next);
        // `replace` sends the resourceVersion we read: a concurrent change makes it fail.
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldByOther(holder)),
            Err(e) => Err(api_error(e)),
        }
    }
}
