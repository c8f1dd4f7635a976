//! Where a path a caller names points. Relative paths (and `~/…`) are the user's home's, as in
//! envd; `..` is resolved lexically. Symlinks are followed by the kernel with the runtime's own
//! rights, which are exactly the caller's: the runtime runs as the container's user, so a path
//! can reach nothing a command the caller runs could not.

use std::path::{Component, Path, PathBuf};

pub fn resolve(named: &str, home: &Path) -> PathBuf {
    let joined = if let Some(rest) = named.strip_prefix("~/") {
        home.join(rest)
    } else if named == "~" || named.is_empty() {
        home.to_path_buf()
    } else if named.starts_with('/') {
        PathBuf::from(named)
    } else {
        home.join(named)
    };
    let mut clean = PathBuf::from("/");
    for part in joined.components() {
        match part {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    clean
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_home_and_dot_dot_stops_at_root() {
        let home = Path::new("/home/agent");
        assert_eq!(resolve("a.txt", home), PathBuf::from("/home/agent/a.txt"));
        assert_eq!(resolve("~/a", home), PathBuf::from("/home/agent/a"));
        assert_eq!(resolve("", home), PathBuf::from("/home/agent"));
        assert_eq!(resolve("/tmp/../etc/x", home), PathBuf::from("/etc/x"));
        assert_eq!(resolve("../../../../x", home), PathBuf::from("/x"));
        assert_eq!(resolve("/a/./b//c", home), PathBuf::from("/a/b/c"));
    }
}
