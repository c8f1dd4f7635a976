//! Leader election on a coordination Lease, so that of several operator replicas exactly one
//! reconciles. The leader renews the Lease; a replica takes it over only once it has expired.
//! A leader that cannot renew in time stops, so that two never reconcile at once.
//!
//! Expiry is judged as client-go judges it: by how long this replica has seen the same record
//! (holder and renew time) on its own monotonic clock, never by comparing the holder's
//! `renewTime` with this replica's wall clock, so that clock skew between nodes cannot make a
//! live leader look expired.

use std::time::{Duration, Instant};

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

/// The other holder's record as last seen, and since when (this replica's clock).
#[derive(Debug, Default)]
pub struct Observed(Option<(String, Option<MicroTime>, Instant)>);

impl Observed {
    /// Whether a Lease held by `holder`, renewed at `renewed`, has gone unrenewed for
    /// `duration` as this replica has watched it. A changed record restarts the wait.
    fn expired(
        &mut self,
        holder: &str,
        renewed: Option<&MicroTime>,
        duration: Duration,
        now: Instant,
    ) -> bool {
        match &self.0 {
            Some((seen_holder, seen_renewed, since))
                if seen_holder == holder && seen_renewed.as_ref() == renewed =>
            {
                now.duration_since(*since) >= duration
            }
            _ => {
                self.0 = Some((holder.to_string(), renewed.cloned(), now));
                false
            }
        }
    }
}

impl Election {
    /// Waits until this replica holds the Lease. Errors talking to the API server are retried:
    /// a standby has nothing to lose by waiting.
    pub async fn acquire(&self, client: &Client) -> Result<(), LeaderError> {
        let mut waiting_for: Option<String> = None;
        let mut observed = Observed::default();
        loop {
            let attempt = match self.try_hold(client, &mut observed).await {
                Ok(attempt) => attempt,
                Err(error) => {
                    tracing::warn!(%error, "cannot read or take the Lease; retrying");
                    tokio::time::sleep(self.retry).await;
                    continue;
                }
            };
            match attempt {
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
        let mut observed = Observed::default();
        loop {
            tokio::time::sleep(self.retry).await;
            match self.try_hold(client, &mut observed).await {
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

    /// Gives the Lease up on a clean shutdown, as client-go's `ReleaseOnCancel` does: no
    /// holder, and a one-second duration, so that a standby takes over at its next try instead
    /// of waiting out the whole Lease (a rolling update would otherwise pause reconciling for
    /// that long). A Lease someone else holds by now is left alone.
    pub async fn release(&self, client: &Client) -> Result<(), LeaderError> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let api_error = |e| LeaderError::Api(self.name.clone(), e);
        let Some(mut lease) = api.get_opt(&self.name).await.map_err(api_error)? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Changed meanwhile: whoever changed it holds it now.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(api_error(e)),
        }
    }

    /// Creates, renews or takes over the Lease, with optimistic concurrency: of two replicas
    /// that try at once, one gets a conflict.
    async fn try_hold(
        &self,
        client: &Client,
        observed: &mut Observed,
    ) -> Result<Attempt, LeaderError> {
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
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.lease_duration, Duration::from_secs);
        let ours = holder == self.identity;
        if !ours
            && !holder.is_empty()
            && !observed.expired(&holder, spec.renew_time.as_ref(), duration, Instant::now())
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<MicroTime> {
        Timestamp::from_second(seconds).ok().map(MicroTime)
    }

    #[test]
    fn a_renewing_holder_never_expires_whatever_its_clock_says() {
        let mut observed = Observed::default();
        let start = Instant::now();
        let lease = Duration::from_secs(15);
        // The holder's clock is an hour behind: its renew times look long expired.
        for second in 0..60u64 {
            let renewed = at(1_000 + i64::try_from(second / 2).expect("small"));
            assert!(!observed.expired(
                "a",
                renewed.as_ref(),
                lease,
                start + Duration::from_secs(second)
            ));
        }
    }

    #[test]
    fn a_silent_holder_expires_after_the_lease_as_seen_here() {
        let mut observed = Observed::default();
        let start = Instant::now();
        let lease = Duration::from_secs(15);
        let renewed = at(1_000);
        assert!(!observed.expired("a", renewed.as_ref(), lease, start));
        assert!(!observed.expired(
            "a",
            renewed.as_ref(),
            lease,
            start + Duration::from_secs(14)
        ));
        assert!(observed.expired(
            "a",
            renewed.as_ref(),
            lease,
            start + Duration::from_secs(15)
        ));
        // Another holder took it meanwhile: the wait starts again.
        assert!(!observed.expired(
            "b",
            renewed.as_ref(),
            lease,
            start + Duration::from_secs(16)
        ));
    }
}
