//! `GET /v2/sandboxes`: the caller's claimed Sandboxes, filtered by state, template and
//! metadata, in pages of `limit` chained by `x-next-token`.
//!
//! Pages are ordered by sandbox id and the token is the last id given, so a page never
//! repeats or skips a Sandbox that was there before and after, whatever changes in between.

use std::collections::BTreeMap;

use http::{HeaderValue, Response, StatusCode};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::sandboxes::{describe, metadata_of, state_of, template_of};
use super::{ControlError, Scope, api_error, json};
use crate::api::SandboxClaim;
use crate::gateway::State;
use crate::gateway::proxy::Body;

/// The header the next page's token is in.
pub const NEXT_TOKEN: &str = "x-next-token";
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// What a list asks for.
#[derive(Debug, PartialEq, Default)]
struct Filter {
    metadata: BTreeMap<String, String>,
    /// `running`, `paused`; none: both.
    states: Vec<String>,
    template: Option<String>,
    /// The last sandbox id of the page before.
    after: Option<String>,
    limit: usize,
    descending: bool,
}

fn filter(query: &str) -> Result<Filter, ControlError> {
    let bad = |m: String| ControlError::new(StatusCode::BAD_REQUEST, m);
    let mut filter = Filter {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            // The SDKs send `metadata` as one form-encoded string of quoted pairs.
            "metadata" => filter.metadata.extend(
                form_urlencoded::parse(value.as_bytes()).map(|(k, v)| (k.into(), v.into())),
            ),
            "state" => {
                for state in value.split(',').filter(|s| !s.is_empty()) {
                    if !matches!(state, "running" | "paused") {
                        return Err(bad(format!("state {state:?}: running or paused")));
                    }
                    filter.states.push(state.to_string());
                }
            }
            "template" => filter.template = Some(value.into_owned()),
            "nextToken" => filter.after = Some(value.into_owned()),
            "limit" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| bad(format!("limit {value:?}: 1 to {MAX_LIMIT}")))?;
            }
            "order" => {
                filter.descending = match value.as_ref() {
                    "asc" => false,
                    "desc" => true,
                    other => return Err(bad(format!("order {other:?}: asc or desc"))),
                }
            }
            // `startedAfter` and fields E2B adds later narrow nothing here.
            _ => {}
        }
    }
    Ok(filter)
}

impl Filter {
    fn keeps(&self, state: &str, template: &str, metadata: &BTreeMap<String, String>) -> bool {
        (self.states.is_empty() || self.states.iter().any(|s| s == state))
            && self.template.as_deref().is_none_or(|t| t == template)
            && self
                .metadata
                .iter()
                .all(|(k, v)| metadata.get(k) == Some(v))
    }

    /// This page of `ids` (sorted ascending), and whether another follows.
    fn page<T>(&self, mut items: Vec<(String, T)>) -> (Vec<(String, T)>, bool) {
        if self.descending {
            items.reverse();
        }
        let after = |id: &String| match &self.after {
            None => true,
            Some(token) if self.descending => id < token,
            Some(token) => id > token,
        };
        let mut rest: Vec<(String, T)> = items.into_iter().filter(|(id, _)| after(id)).collect();
        let more = rest.len() > self.limit;
        rest.truncate(self.limit);
        (rest, more)
    }
}

pub(super) async fn list(state: &State, scope: &Scope, query: &str) -> Response<Body> {
    let filter = match filter(query) {
        Ok(filter) => filter,
        Err(e) => return e.response(),
    };
    let claims = match Api::<SandboxClaim>::namespaced(scope.client.clone(), &scope.namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(claims) => claims.items,
        Err(e) => return api_error("list the SandboxClaims", &e),
    };
    let mut listed: Vec<(String, serde_json::Value)> = claims
        .iter()
        .filter_map(|claim| {
            let bound = claim.status.as_ref()?.sandbox.as_ref()?;
            let sandbox = state
                .waker
                .sandbox(&(scope.namespace.clone(), bound.name.clone()))?;
            let metadata = metadata_of(Some(claim));
            filter
                .keeps(state_of(&sandbox), &template_of(&sandbox), &metadata)
                .then(|| {
                    (
                        crate::api::sandbox_id(&scope.namespace, &sandbox.name_any()),
                        describe(&sandbox, Some(claim)),
                    )
                })
        })
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let (page, more) = filter.page(listed);
    let last = page.last().map(|(id, _)| id.clone());
    let body: Vec<serde_json::Value> = page.into_iter().map(|(_, v)| v).collect();
    let mut response = json(StatusCode::OK, &serde_json::Value::Array(body));
    if more && let Some(last) = last.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(NEXT_TOKEN, last);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_query_is_read() {
        // What `Sandbox.list(query=SandboxQuery(metadata={"user id": "a&b"}, state=[...]))`
        // sends: the pairs quoted, then form-encoded as one value.
        let query = "metadata=user%2520id%3Da%2526b%26team%3Dx&state=running%2Cpaused&limit=2&nextToken=abc";
        let read = filter(query).expect("a filter");
        assert_eq!(
            read.metadata,
            BTreeMap::from([
                ("user id".to_string(), "a&b".to_string()),
                ("team".to_string(), "x".to_string()),
            ])
        );
        assert_eq!(read.states, ["running", "paused"]);
        assert_eq!(read.limit, 2);
        assert_eq!(read.after.as_deref(), Some("abc"));
        assert!(filter("state=gone").is_err());
        assert!(filter("limit=0").is_err());
        assert!(filter("order=sideways").is_err());
    }

    #[test]
    fn metadata_must_all_match() {
        let wanted = filter("metadata=a%3D1%26b%3D2").expect("a filter");
        let has = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(wanted.keeps("running", "t", &has(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(!wanted.keeps("running", "t", &has(&[("a", "1")])));
        assert!(!wanted.keeps("running", "t", &has(&[("a", "1"), ("b", "3")])));
    }

    #[test]
    fn pages_chain_without_repeats_or_gaps() {
        let ids: Vec<(String, ())> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|id| (id.to_string(), ()))
            .collect();
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let f = Filter {
                limit: 2,
                after: token.clone(),
                ..Default::default()
            };
            let (page, more) = f.page(ids.clone());
            seen.extend(page.iter().map(|(id, _)| id.clone()));
            if !more {
                break;
            }
            token = page.last().map(|(id, _)| id.clone());
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        let descending = Filter {
            limit: 10,
            descending: true,
            after: Some("d".into()),
            ..Default::default()
        };
        let (page, more) = descending.page(ids);
        assert_eq!(
            page.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["c", "b", "a"]
        );
        assert!(!more);
    }
}
