//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` package does it (the same record, timings and rules), so
//! tools that read Leases (`kubectl get lease`) see the usual fields:
//!
//! - a candidate takes the Lease when it does not exist, when its holder is
//!   empty (released), or when the record has not changed for
//!   `leaseDurationSeconds` *as measured on the candidate's own clock* since it
//!   last saw it change (`renewTime` is written, never trusted: clocks differ);
//! - every write is a PUT carrying the resourceVersion read, so of two candidates
//!   one wins and the other gets 409 Conflict;
//! - taking over from another holder bumps `leaseTransitions` and sets
//!   `acquireTime`;
//! - the leader renews every retry period; a leader that has not renewed within
//!   the renew deadline (shorter than the lease duration) stops writing, so it
//!   has stopped before any standby may take over ([`Term::valid`]);
//! - on shutdown the leader releases the Lease (empty holder, a duration of
//!   1 s), so a standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use thiserror::Error;

/// The timings, as client-go names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a standby waits, after the record last changed, before it takes over.
    pub lease_duration: Duration,
    /// How long the leader keeps writing without a successful renewal.
    pub renew_deadline: Duration,
    /// How often a candidate tries, and the leader renews.
    pub retry_period: Duration,
}

impl Timings {
    /// client-go's defaults for controllers (kube-controller-manager's too).
    pub const DEFAULT: Timings = Timings {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    /// client-go's checks: the deadline leaves the leader time to stop before a
    /// standby can start, and room for more than one renewal.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return Err(format!(
                "the renew deadline ({:?}) must exceed 1.2 x the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            return Err(format!("the lease duration ({:?}) must be a whole number of seconds", self.lease_duration));
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum ElectionError {
    #[error("reading Lease {namespace}/{name}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Lease {namespace}/{name}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
}

/// One candidate's view of the Lease.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timings: Timings,
    /// The record as last read, and when (on our clock) it last changed.
    observed: Option<(LeaseSpec, Instant)>,
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (taken or renewed); the attempt began at this instant.
    Held(Instant),
    /// Someone else holds it.
    Other(String),
}

/// What a term of leadership allows: writes before the renew deadline.
#[derive(Clone, Debug)]
pub struct Term {
    until: tokio::sync::watch::Receiver<Instant>,
}

impl Term {
    pub fn channel(until: Instant) -> (tokio::sync::watch::Sender<Instant>, Term) {
        let (tx, rx) = tokio::sync::watch::channel(until);
        (tx, Term { until: rx })
    }

    /// Whether writes are still allowed: the last successful renewal began less
    /// than the renew deadline ago.
    pub fn valid(&self) -> bool {
        Instant::now() < *self.until.borrow()
    }
}

fn same_record(a: &LeaseSpec, b: &LeaseSpec) -> bool {
    (&a.holder_identity, a.lease_duration_seconds, &a.renew_time, &a.acquire_time, a.lease_transitions)
        == (&b.holder_identity, b.lease_duration_seconds, &b.renew_time, &b.acquire_time, b.lease_transitions)
}

impl Elector {
    pub fn new(api: Api<Lease>, namespace: &str, name: &str, identity: &str, timings: Timings) -> Elector {
        Elector { api, namespace: namespace.into(), name: name.into(), identity: identity.into(), timings, observed: None }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn get_error(&self, source: kube::Error) -> ElectionError {
        ElectionError::Get { namespace: self.namespace.clone(), name: self.name.clone(), source }
    }

    fn write_error(&self, source: kube::Error) -> ElectionError {
        ElectionError::Write { namespace: self.namespace.clone(), name: self.name.clone(), source }
    }

    /// One `tryAcquireOrRenew`, bounded by `timeout`.
    pub async fn try_acquire_or_renew(&mut self, timeout: Duration) -> Result<Attempt, ElectionError> {
        tokio::time::timeout(timeout, self.attempt()).await.map_err(|_| ElectionError::Timeout(timeout))?
    }

    async fn attempt(&mut self) -> Result<Attempt, ElectionError> {
        let started = Instant::now();
        let now = MicroTime(Timestamp::now());
        let duration = self.timings.lease_duration.as_secs() as i32;
        let ours = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..Default::default()
        };
        let Some(current) = self.api.get_opt(&self.name).await.map_err(|e| self.get_error(e))? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(ours.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed = Some((ours, started));
                    Ok(Attempt::Held(started))
                }
                // Another candidate created it first: it holds the Lease.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Other("another candidate (just created)".into())),
                Err(e) => Err(self.write_error(e)),
            };
        };
        let old = current.spec.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| !same_record(seen, &old)) {
            self.observed = Some((old.clone(), started));
        }
        let holder = old.holder_identity.clone().unwrap_or_default();
        let leading = holder == self.identity;
        let seen_at = self.observed.as_ref().map_or(started, |(_, t)| *t);
        let their_duration = Duration::from_secs(old.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        if !holder.is_empty() && !leading && started < seen_at + their_duration {
            return Ok(Attempt::Other(holder));
        }
        let mut spec = ours;
        if leading {
            spec.acquire_time = old.acquire_time.clone();
            spec.lease_transitions = old.lease_transitions;
        } else {
            spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0) + 1);
        }
        let mut lease = current;
        lease.spec = Some(spec.clone());
        // The resourceVersion read stays in the body: a concurrent writer makes this a 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                self.observed = Some((spec, started));
                Ok(Attempt::Held(started))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Other(format!("{holder} (lost a race to write)"))),
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Gives the Lease up (client-go's `ReleaseOnCancel`): an empty holder and a
    /// duration of 1 s, so a standby need not wait out the lease duration.
    pub async fn release(&mut self, timeout: Duration) -> Result<(), ElectionError> {
        let work = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(|e| self.get_error(e))? else {
                return Ok(());
            };
            let old = lease.spec.clone().unwrap_or_default();
            if old.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            let now = MicroTime(Timestamp::now());
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: old.lease_transitions,
                ..Default::default()
            });
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(drop).map_err(|e| self.write_error(e))
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| ElectionError::Timeout(timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_are_checked_as_client_go_checks_them() {
        assert_eq!(Timings::DEFAULT.check(), Ok(()));
        let t = |l, d, r| Timings {
            lease_duration: Duration::from_millis(l),
            renew_deadline: Duration::from_millis(d),
            retry_period: Duration::from_millis(r),
        };
        assert!(t(4000, 4000, 500).check().unwrap_err().contains("shorter than the lease duration"));
        assert!(t(4000, 1000, 900).check().unwrap_err().contains("1.2 x the retry period"));
        assert!(t(4500, 3000, 500).check().unwrap_err().contains("whole number of seconds"));
        assert_eq!(t(4000, 2500, 500).check(), Ok(()));
    }

    #[test]
    fn records_compare_on_what_leader_election_writes() {
        let a = LeaseSpec { holder_identity: Some("a".into()), lease_transitions: Some(1), ..Default::default() };
        let mut b = a.clone();
        assert!(same_record(&a, &b));
        b.renew_time = Some(MicroTime(Timestamp::now()));
        assert!(!same_record(&a, &b), "a renewal is a change: the holder is alive");
    }
}
