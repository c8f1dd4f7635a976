//! `EntryInfo`: what the file system says about one path, in envd's JSON.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

use sandman_connect::RpcError;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub path: String,
    /// proto3 JSON writes int64 as a string.
    pub size: String,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    pub modified_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

/// The entry for `path`, not following a final symlink (a link is reported as one).
pub fn of(path: &Path) -> Result<EntryInfo, RpcError> {
    let metadata = std::fs::symlink_metadata(path).map_err(|e| RpcError::io(path, &e))?;
    Ok(from_metadata(path, &metadata, &crate::users::Names::load()))
}

pub fn from_metadata(
    path: &Path,
    metadata: &std::fs::Metadata,
    names: &crate::users::Names,
) -> EntryInfo {
    let file_type = metadata.file_type();
    let kind = if file_type.is_symlink() {
        "FILE_TYPE_SYMLINK"
    } else if file_type.is_dir() {
        "FILE_TYPE_DIRECTORY"
    } else {
        "FILE_TYPE_FILE"
    };
    let mode = metadata.permissions().mode();
    let modified = metadata
        .modified()
        .map(|t| humantime::format_rfc3339_nanos(t).to_string())
        .unwrap_or_default();
    EntryInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        kind,
        path: path.display().to_string(),
        size: metadata.len().to_string(),
        mode: mode & 0o7777,
        permissions: permissions(file_type, mode),
        owner: names.user(metadata.uid()),
        group: names.group(metadata.gid()),
        modified_time: modified,
        symlink_target: file_type
            .is_symlink()
            .then(|| std::fs::read_link(path).ok())
            .flatten()
            .map(|t| t.display().to_string()),
    }
}

/// Permissions as Go's `FileMode.String()` writes them (envd's format): `drwxr-xr-x`.
fn permissions(file_type: std::fs::FileType, mode: u32) -> String {
    let first = if file_type.is_symlink() {
        'L'
    } else if file_type.is_dir() {
        'd'
    } else {
        '-'
    };
    let mut text = String::with_capacity(10);
    text.push(first);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

/// The `type` of an entry in `/files`' answers, which name file types in lower case.
pub fn upload_answer(path: &Path) -> serde_json::Value {
    serde_json::json!({
        "path": path.display().to_string(),
        "name": path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        "type": "file",
    })
}
