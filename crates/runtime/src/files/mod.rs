//! `filesystem.Filesystem`: stat, list, make, move and remove paths, and watch directories.

pub mod entry;
pub mod path;
pub mod transfer;
mod watch;

use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, Response};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::http::{self as h, Body, RequestStream};
use crate::state::State;
use entry::EntryInfo;
use sandman_connect::{Code, RpcError};
pub use watch::Watchers;

/// A listing stops here rather than answer with an unbounded message.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PathRequest {
    path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListDirRequest {
    path: String,
    depth: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MoveRequest {
    source: String,
    destination: String,
}

#[derive(Serialize)]
struct EntryResponse {
    entry: EntryInfo,
}

#[derive(Serialize)]
struct ListDirResponse {
    entries: Vec<EntryInfo>,
}

#[derive(Serialize)]
struct Empty {}

pub async fn call(
    state: Arc<State>,
    method: &str,
    headers: &HeaderMap,
    body: Incoming,
) -> Response<Body> {
    let home = match caller_home(&state, headers) {
        Ok(home) => home,
        Err(e) if method == "WatchDir" => return h::stream_error(&e),
        Err(e) => return h::unary::<Empty>(Err(e)),
    };
    match method {
        "Stat" => h::unary(stat(&home, body).await),
        "ListDir" => h::unary(list_dir(&home, body).await),
        "MakeDir" => h::unary(make_dir(&home, body).await),
        "Move" => h::unary(move_path(&home, body).await),
        "Remove" => h::unary(remove(&home, body).await),
        "WatchDir" => match RequestStream::new(body).single().await {
            Ok(request) => state.watchers.stream(&home, request, headers),
            Err(e) => h::stream_error(&e),
        },
        "CreateWatcher" => match h::read_unary(body).await {
            Ok(request) => h::unary(state.watchers.create(&home, request)),
            Err(e) => h::unary::<Empty>(Err(e)),
        },
        "GetWatcherEvents" => match h::read_unary(body).await {
            Ok(request) => h::unary(state.watchers.events(request)),
            Err(e) => h::unary::<Empty>(Err(e)),
        },
        "RemoveWatcher" => match h::read_unary(body).await {
            Ok(request) => h::unary(state.watchers.remove(request)),
            Err(e) => h::unary::<Empty>(Err(e)),
        },
        other => h::unary::<Empty>(Err(RpcError::new(
            Code::Unimplemented,
            format!("filesystem.Filesystem/{other} is not a method"),
        ))),
    }
}

fn caller_home(state: &State, headers: &HeaderMap) -> Result<std::path::PathBuf, RpcError> {
    let named = crate::users::from_basic_auth(headers);
    Ok(crate::users::resolve(&state.user, named.as_deref())?.home)
}

async fn stat(home: &Path, body: Incoming) -> Result<EntryResponse, RpcError> {
    let request: PathRequest = h::read_unary(body).await?;
    let path = path::resolve(&request.path, home);
    Ok(EntryResponse {
        entry: blocking(move || entry::of(&path)).await?,
    })
}

async fn list_dir(home: &Path, body: Incoming) -> Result<ListDirResponse, RpcError> {
    let request: ListDirRequest = h::read_unary(body).await?;
    let root = path::resolve(&request.path, home);
    let depth = request.depth.max(1);
    let entries = blocking(move || {
        let metadata = std::fs::metadata(&root).map_err(|e| RpcError::io(&root, &e))?;
        if !metadata.is_dir() {
            return Err(RpcError::new(
                Code::InvalidArgument,
                format!("{} is not a directory", root.display()),
            ));
        }
        let mut entries = Vec::new();
        walk(&root, depth, &crate::users::Names::load(), &mut entries)?;
        Ok(entries)
    })
    .await?;
    Ok(ListDirResponse { entries })
}

/// Lists `dir` and, below `depth` 1, the directories in it; a symlinked directory is listed as
/// a link, not entered, so a loop cannot make the walk endless.
fn walk(
    dir: &Path,
    depth: u32,
    names: &crate::users::Names,
    entries: &mut Vec<EntryInfo>,
) -> Result<(), RpcError> {
    let reader = std::fs::read_dir(dir).map_err(|e| RpcError::io(dir, &e))?;
    let mut children: Vec<_> = reader.filter_map(Result::ok).collect();
    children.sort_by_key(|c| c.file_name());
    for child in children {
        if entries.len() >= MAX_ENTRIES {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("more than {MAX_ENTRIES} entries; list a smaller depth or directory"),
            ));
        }
        let path = child.path();
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        entries.push(entry::from_metadata(&path, &metadata, names));
        if depth > 1 && metadata.is_dir() {
            // A subdirectory that cannot be read is listed but not entered.
            let _ = walk(&path, depth - 1, names, entries);
        }
    }
    Ok(())
}

async fn make_dir(home: &Path, body: Incoming) -> Result<EntryResponse, RpcError> {
    let request: PathRequest = h::read_unary(body).await?;
    let path = path::resolve(&request.path, home);
    let entry = blocking(move || {
        if path.exists() {
            return Err(RpcError::new(
                Code::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        std::fs::create_dir_all(&path).map_err(|e| RpcError::io(&path, &e))?;
        entry::of(&path)
    })
    .await?;
    Ok(EntryResponse { entry })
}

async fn move_path(home: &Path, body: Incoming) -> Result<EntryResponse, RpcError> {
    let request: MoveRequest = h::read_unary(body).await?;
    let source = path::resolve(&request.source, home);
    let destination = path::resolve(&request.destination, home);
    let entry = blocking(move || {
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RpcError::io(parent, &e))?;
        }
        std::fs::rename(&source, &destination).map_err(|e| RpcError::io(&source, &e))?;
        entry::of(&destination)
    })
    .await?;
    Ok(EntryResponse { entry })
}

async fn remove(home: &Path, body: Incoming) -> Result<Empty, RpcError> {
    let request: PathRequest = h::read_unary(body).await?;
    let path = path::resolve(&request.path, home);
    blocking(move || {
        let metadata = std::fs::symlink_metadata(&path).map_err(|e| RpcError::io(&path, &e))?;
        // A link is removed, never what it points to.
        let removed = if metadata.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| RpcError::io(&path, &e))
    })
    .await?;
    Ok(Empty {})
}

/// File-system work off the runtime's one thread, so a slow disk does not stall other calls.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RpcError::new(Code::Internal, format!("file-system task: {e}")))?
}
