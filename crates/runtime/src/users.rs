//! Who a call runs as. The runtime runs as the container's user and gives commands exactly its
//! rights: a call may name that user (or, when the runtime itself is root, any user of the
//! image's `/etc/passwd`), never gain one.

use std::path::PathBuf;

use base64::Engine;
use http::HeaderMap;

use sandman_connect::{Code, RpcError};

/// A user of the image, as `/etc/passwd` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The runtime's own user: its uid, named from `/etc/passwd` when the image lists it.
pub fn current() -> User {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let listed = passwd().into_iter().find(|u| u.uid == uid);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| listed.as_ref().map(|u| u.home.clone()))
        .unwrap_or_else(|| PathBuf::from("/"));
    User {
        name: listed.map(|u| u.name).unwrap_or_else(|| uid.to_string()),
        uid,
        gid,
        home,
    }
}

/// The user a request names (envd's `Authorization: Basic base64(user:)`, or `username=` on
/// `/files`), checked against what the runtime may do; no name means the runtime's own user.
pub fn resolve(own: &User, named: Option<&str>) -> Result<User, RpcError> {
    let Some(name) = named.filter(|n| !n.is_empty()) else {
        return Ok(own.clone());
    };
    if name == own.name || name == own.uid.to_string() {
        return Ok(own.clone());
    }
    let Some(user) = passwd().into_iter().find(|u| u.name == name) else {
        return Err(RpcError::new(
            Code::Unauthenticated,
            format!("user {name:?} is not in the image's /etc/passwd"),
        ));
    };
    if own.uid != 0 {
        return Err(RpcError::new(
            Code::PermissionDenied,
            format!(
                "the runtime runs as {} and cannot act as {name:?}: commands get the container's own user",
                own.name
            ),
        ));
    }
    Ok(user)
}

/// The user named by `Authorization: Basic …` (envd's way), if any.
pub fn from_basic_auth(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split(':').next().unwrap_or_default().to_string())
}

fn passwd() -> Vec<User> {
    let Ok(text) = std::fs::read_to_string("/etc/passwd") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(User {
                name: fields.first()?.to_string(),
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
                home: PathBuf::from(fields.get(5)?),
            })
        })
        .collect()
}

/// The image's user and group names by id, for `EntryInfo.owner`/`group`: read once per call,
/// not once per entry of a listing.
pub struct Names {
    users: std::collections::HashMap<u32, String>,
    groups: std::collections::HashMap<u32, String>,
}

impl Names {
    pub fn load() -> Self {
        Names {
            users: by_id("/etc/passwd"),
            groups: by_id("/etc/group"),
        }
    }

    /// The user's name, its number when the image does not list it.
    pub fn user(&self, id: u32) -> String {
        self.users
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    pub fn group(&self, id: u32) -> String {
        self.groups
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

fn by_id(file: &str) -> std::collections::HashMap<u32, String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some((fields.get(2)?.parse().ok()?, fields.first()?.to_string()))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_names_the_user() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            "Basic dXNlcjo=".parse().unwrap(),
        );
        assert_eq!(from_basic_auth(&headers).as_deref(), Some("user"));
    }

    #[test]
    fn a_non_root_runtime_cannot_become_another_user() {
        let own = User {
            name: "agent".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/agent".into(),
        };
        assert_eq!(resolve(&own, None).unwrap(), own);
        assert_eq!(resolve(&own, Some("agent")).unwrap(), own);
        assert_eq!(resolve(&own, Some("1000")).unwrap(), own);
        let error = resolve(&own, Some("root")).unwrap_err();
        assert_eq!(error.code, Code::PermissionDenied, "{error}");
    }
}
