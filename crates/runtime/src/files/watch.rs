//! Directory watches (inotify, through `notify`): streamed (`WatchDir`) or polled
//! (`CreateWatcher`, `GetWatcherEvents`, `RemoveWatcher`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, Response};
use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::http::{self as h, Body};
use sandman_connect::{self as connect, Code, RpcError};

/// At most this many watches at once, streamed and polled together.
const MAX_WATCHES: usize = 64;
/// Events a watch holds for a reader that is behind. More is an overflow: a streamed watch
/// ends with `resource_exhausted`, a polled one reports it on its next poll.
const MAX_PENDING: usize = 4096;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WatchRequest {
    path: String,
    recursive: bool,
    include_entry: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WatcherId {
    watcher_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemEvent {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<super::entry::EntryInfo>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    watcher_id: String,
}

#[derive(Serialize)]
pub struct Events {
    events: Vec<FilesystemEvent>,
}

#[derive(Serialize)]
pub struct Empty {}

/// A watch's side of the channel: events, or the overflow that ended it.
type Item = Result<FilesystemEvent, RpcError>;

struct Polled {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<Item>,
}

#[derive(Default)]
pub struct Watchers {
    polled: Mutex<HashMap<String, Polled>>,
    streamed: std::sync::atomic::AtomicUsize,
    next: std::sync::atomic::AtomicU64,
}

impl Watchers {
    fn count(&self) -> usize {
        self.lock().len() + self.streamed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Polled>> {
        self.polled.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stream(
        self: &std::sync::Arc<Self>,
        home: &Path,
        request: WatchRequest,
        headers: &HeaderMap,
    ) -> Response<Body> {
        if self.count() >= MAX_WATCHES {
            return h::stream_error(&too_many());
        }
        let (watcher, mut events) = match watch(home, &request) {
            Ok(pair) => pair,
            Err(e) => return h::stream_error(&e),
        };
        let keepalive = h::keepalive(headers);
        let (frames, receiver) = mpsc::channel::<Bytes>(h::STREAM_BUFFER);
        let watchers = self.clone();
        watchers
            .streamed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let _watcher = watcher;
            let start = serde_json::json!({ "start": {} });
            let mut result = Ok(());
            if frames.send(connect::envelope(&start)).await.is_ok() {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
                loop {
                    let message = tokio::select! {
                        item = events.recv() => match item {
                            Some(Ok(event)) => serde_json::json!({ "filesystem": event }),
                            Some(Err(e)) => { result = Err(e); break; }
                            None => break,
                        },
                        _ = ticks.tick() => serde_json::json!({ "keepalive": {} }),
                    };
                    if frames.send(connect::envelope(&message)).await.is_err() {
                        break;
                    }
                }
                let _ = frames
                    .send(connect::end_of_stream(result.err().as_ref()))
                    .await;
            }
            watchers
                .streamed
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
        h::streaming("application/connect+json", receiver)
    }

    pub fn create(&self, home: &Path, request: WatchRequest) -> Result<Created, RpcError> {
        if self.count() >= MAX_WATCHES {
            return Err(too_many());
        }
        let (watcher, events) = watch(home, &request)?;
        let id = format!(
            "w{}",
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.lock().insert(
            id.clone(),
            Polled {
                _watcher: watcher,
                events,
            },
        );
        Ok(Created { watcher_id: id })
    }

    pub fn events(&self, request: WatcherId) -> Result<Events, RpcError> {
        let mut polled = self.lock();
        let watch = polled
            .get_mut(&request.watcher_id)
            .ok_or_else(|| unknown(&request.watcher_id))?;
        let mut events = Vec::new();
        while let Ok(item) = watch.events.try_recv() {
            match item {
                Ok(event) => events.push(event),
                Err(e) => {
                    polled.remove(&request.watcher_id);
                    return Err(e);
                }
            }
        }
        Ok(Events { events })
    }

    pub fn remove(&self, request: WatcherId) -> Result<Empty, RpcError> {
        self.lock()
            .remove(&request.watcher_id)
            .map(|_| Empty {})
            .ok_or_else(|| unknown(&request.watcher_id))
    }
}

fn too_many() -> RpcError {
    RpcError::new(
        Code::ResourceExhausted,
        format!("{MAX_WATCHES} watches are open already"),
    )
}

fn unknown(id: &str) -> RpcError {
    RpcError::new(Code::NotFound, format!("no watcher {id:?}"))
}

fn watch(
    home: &Path,
    request: &WatchRequest,
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<Item>), RpcError> {
    let root = super::path::resolve(&request.path, home);
    if !root.is_dir() {
        return Err(RpcError::new(
            Code::InvalidArgument,
            format!("{} is not a directory", root.display()),
        ));
    }
    let (sender, receiver) = mpsc::channel::<Item>(MAX_PENDING);
    let base = root.clone();
    let include_entry = request.include_entry;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let Some(kind) = kind_of(&event.kind) else {
            return;
        };
        for path in &event.paths {
            let item = FilesystemEvent {
                name: relative(&base, path),
                kind,
                entry: include_entry.then(|| super::entry::of(path).ok()).flatten(),
            };
            if sender.try_send(Ok(item)).is_err() {
                let overflow = RpcError::new(
                    Code::ResourceExhausted,
                    format!("more than {MAX_PENDING} events were not read in time"),
                );
                // The channel is full: the overflow replaces the events that did not fit.
                let _ = sender.try_send(Err(overflow));
                return;
            }
        }
    })
    .map_err(|e| RpcError::new(Code::Internal, format!("watch: {e}")))?;
    let mode = if request.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher
        .watch(&root, mode)
        .map_err(|e| RpcError::new(Code::Internal, format!("watch {}: {e}", root.display())))?;
    Ok((watcher, receiver))
}

fn kind_of(kind: &EventKind) -> Option<&'static str> {
    match kind {
        EventKind::Create(_) => Some("EVENT_TYPE_CREATE"),
        EventKind::Modify(ModifyKind::Name(_)) => Some("EVENT_TYPE_RENAME"),
        EventKind::Modify(ModifyKind::Metadata(_)) => Some("EVENT_TYPE_CHMOD"),
        EventKind::Modify(_) => Some("EVENT_TYPE_WRITE"),
        EventKind::Remove(_) => Some("EVENT_TYPE_REMOVE"),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .map(PathBuf::from)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
