//! What the local API server says about itself.

use std::collections::BTreeMap;

use kube::Client;

/// Requests by (verb, resource, subresource).
pub type Counts = BTreeMap<(String, String, String), f64>;

/// `apiserver_request_total` for write verbs, by (verb, resource, subresource).
pub async fn write_counts(client: &Client) -> Counts {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.expect("metrics");
    let mut counts = Counts::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| -> String {
            let key = format!("{name}=\"");
            labels
                .split(&key)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let verb = label("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY") {
            continue;
        }
        let value: f64 = value.parse().unwrap_or(0.0);
        *counts
            .entry((verb, label("resource"), label("subresource")))
            .or_default() += value;
    }
    counts
}
