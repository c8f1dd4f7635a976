//! Posting Events, in bounded memory. An Event repeated within a while becomes a count on the
//! first (events.k8s.io's `series`), as kube's `Recorder` does; but that one keeps every Event
//! it posted, whole, for six minutes, and scans them all under one lock on every post. Ten
//! thousand Sandboxes launched in a few minutes post about 30,000 Events: all held, and each
//! post a scan of them. This one remembers only what a series needs (the Event's name and
//! count), for at most `MAX_REMEMBERED` recent Events.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};

/// How long a repeat still counts on the first Event (kube's and client-go's figure).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// The most Events remembered for their series. Past it the oldest are let go: a repeat of
/// one of those is a new Event, never a wrong count.
const MAX_REMEMBERED: usize = 4096;

/// Who posts: events.k8s.io's `reportingController` and `reportingInstance`.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    posted: Arc<Mutex<Posted>>,
}

/// What makes two Events one series: the object, type, reason, action and note.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    namespace: String,
    name: String,
    uid: String,
    warning: bool,
    reason: String,
    action: String,
    note: u64,
}

#[derive(Clone)]
struct Remembered {
    name: String,
    count: i32,
    last: Timestamp,
}

#[derive(Default)]
struct Posted {
    by_key: HashMap<SeriesKey, Remembered>,
}

impl Posted {
    /// The series `key` continues, if it was posted within the window.
    fn recent(&self, key: &SeriesKey, now: Timestamp) -> Option<Remembered> {
        self.by_key
            .get(key)
            .filter(|r| r.last + SERIES_WINDOW > now)
            .cloned()
    }

    fn remember(&mut self, key: SeriesKey, remembered: Remembered, now: Timestamp) {
        if self.by_key.len() >= MAX_REMEMBERED && !self.by_key.contains_key(&key) {
            self.by_key.retain(|_, r| r.last + SERIES_WINDOW > now);
            if self.by_key.len() >= MAX_REMEMBERED {
                // All are recent: the oldest half goes.
                let mut times: Vec<Timestamp> = self.by_key.values().map(|r| r.last).collect();
                times.sort();
                let cut = times[times.len() / 2];
                self.by_key.retain(|_, r| r.last > cut);
            }
        }
        self.by_key.insert(key, remembered);
    }
}

impl Recorder {
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
            posted: Arc::default(),
        }
    }

    /// Posts `event` about `reference`: a new Event, or one more count on the same Event
    /// posted within the window.
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = series_key(&namespace, event, reference);
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let earlier = self.posted.lock().ok().and_then(|p| p.recent(&key, now));
        if let Some(earlier) = earlier {
            let count = earlier.count + 1;
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            let patch = serde_json::json!({ "series": series });
            match api
                .patch(
                    &earlier.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    self.remember(key, earlier.name, count, now);
                    return Ok(());
                }
                // The API server let it go (Events have a TTL): a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let posted = self.new_event(event, reference, &namespace, now);
        let name = posted.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &posted).await?;
        self.remember(key, name, 1, now);
        Ok(())
    }

    fn remember(&self, key: SeriesKey, name: String, count: i32, now: Timestamp) {
        if let Ok(mut posted) = self.posted.lock() {
            let last = now;
            posted.remember(key, Remembered { name, count, last }, now);
        }
    }

    fn new_event(
        &self,
        event: &Event,
        reference: &ObjectReference,
        namespace: &str,
        now: Timestamp,
    ) -> K8sEvent {
        let about = reference.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_string()),
                name: Some(format!("{about}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

fn series_key(namespace: &str, event: &Event, reference: &ObjectReference) -> SeriesKey {
    // A hash stands for the note: the note itself may be up to 1 KiB.
    let mut note = DefaultHasher::new();
    event.note.hash(&mut note);
    SeriesKey {
        namespace: namespace.to_string(),
        name: reference.name.clone().unwrap_or_default(),
        uid: reference.uid.clone().unwrap_or_default(),
        warning: matches!(event.type_, EventType::Warning),
        reason: event.reason.clone(),
        action: event.action.clone(),
        note: note.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str) -> SeriesKey {
        SeriesKey {
            namespace: "ns".into(),
            name: uid.into(),
            uid: uid.into(),
            warning: false,
            reason: "Ready".into(),
            action: "Ready".into(),
            note: 1,
        }
    }

    fn remembered(name: &str, last: Timestamp) -> Remembered {
        Remembered {
            name: name.into(),
            count: 1,
            last,
        }
    }

    #[test]
    fn a_repeat_within_the_window_continues_the_series_and_one_after_it_does_not() {
        let mut posted = Posted::default();
        let then = Timestamp::now();
        posted.remember(key("a"), remembered("a.1", then), then);
        let soon = then + SignedDuration::from_mins(5);
        assert_eq!(
            posted.recent(&key("a"), soon).map(|r| r.name),
            Some("a.1".into())
        );
        assert!(posted.recent(&key("b"), soon).is_none());
        let late = then + SignedDuration::from_mins(7);
        assert!(posted.recent(&key("a"), late).is_none());
    }

    #[test]
    fn memory_stays_bounded_and_keeps_the_newest() {
        let mut posted = Posted::default();
        let start = Timestamp::now();
        for i in 0..(MAX_REMEMBERED * 3) {
            let at = start + SignedDuration::from_millis(i as i64);
            posted.remember(key(&i.to_string()), remembered(&i.to_string(), at), at);
            assert!(posted.by_key.len() <= MAX_REMEMBERED);
        }
        let newest = MAX_REMEMBERED * 3 - 1;
        let now = start + SignedDuration::from_millis(newest as i64);
        assert!(posted.recent(&key(&newest.to_string()), now).is_some());
        assert!(posted.recent(&key("0"), now).is_none());
    }
}
