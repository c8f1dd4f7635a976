//! Which Sandbox a request is for: by host name (`<sandbox>.<namespace>.<domain>`) or by path
//! prefix (`/sandboxes/<namespace>/<name>/…`). Pure; unknown routes are `None`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub namespace: String,
    pub name: String,
    /// The path and query to forward, starting with `/`.
    pub path: String,
}

pub fn resolve(host: Option<&str>, path_and_query: &str, domain: Option<&str>) -> Option<Route> {
    if let (Some(host), Some(domain)) = (host, domain) {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        if let Some(prefix) = host.strip_suffix(domain).and_then(|p| p.strip_suffix('.'))
            && let Some((name, namespace)) = prefix.split_once('.')
            && valid(name)
            && valid(namespace)
        {
            return Some(Route {
                namespace: namespace.into(),
                name: name.into(),
                path: path_and_query.to_string(),
            });
        }
    }
    let rest = path_and_query.strip_prefix("/sandboxes/")?;
    let mut parts = rest.splitn(3, '/');
    let namespace = parts.next()?;
    let name_and_more = parts.next()?;
    // `/sandboxes/ns/name?x` has its query on the name.
    let (name, query) = name_and_more
        .split_once('?')
        .map_or((name_and_more, None), |(n, q)| (n, Some(q)));
    if !valid(namespace) || !valid(name) {
        return None;
    }
    let path = match (parts.next(), query) {
        (Some(more), _) => format!("/{more}"),
        (None, Some(query)) => format!("/?{query}"),
        (None, None) => "/".into(),
    };
    Some(Route {
        namespace: namespace.into(),
        name: name.into(),
        path,
    })
}

/// A DNS-1123 label: what Kubernetes allows for namespaces and Sandbox names.
fn valid(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(ns: &str, name: &str, path: &str) -> Option<Route> {
        Some(Route {
            namespace: ns.into(),
            name: name.into(),
            path: path.into(),
        })
    }

    #[test]
    fn path_prefix_routes() {
        assert_eq!(
            resolve(None, "/sandboxes/team/agent/v1/run?x=1", None),
            route("team", "agent", "/v1/run?x=1")
        );
        assert_eq!(
            resolve(None, "/sandboxes/team/agent", None),
            route("team", "agent", "/")
        );
        assert_eq!(
            resolve(None, "/sandboxes/team/agent?x=1", None),
            route("team", "agent", "/?x=1")
        );
        assert_eq!(resolve(None, "/sandboxes/team", None), None);
        assert_eq!(resolve(None, "/elsewhere", None), None);
        assert_eq!(resolve(None, "/sandboxes/Team/agent/", None), None);
        assert_eq!(resolve(None, "/sandboxes/../agent/", None), None);
    }

    #[test]
    fn host_routes_under_the_domain_only() {
        let domain = Some("sbx.example");
        assert_eq!(
            resolve(Some("agent.team.sbx.example:8080"), "/a", domain),
            route("team", "agent", "/a")
        );
        assert_eq!(
            resolve(Some("agent.team.other.example"), "/a", domain),
            None
        );
        assert_eq!(resolve(Some("team.sbx.example"), "/a", domain), None);
        assert_eq!(resolve(Some("agent.team.sbx.example"), "/a", None), None);
    }
}
