//! Policy distribution against real servers on loopback: Debian's `docker-registry` for OCI
//! artifacts, and a plain HTTP server for URLs.

use bytes::Bytes;
use sandman::distribution::http::HttpClient;
use sandman::distribution::oci::{self, Reference};
use sandman::distribution::{FetchError, sha256_hex};
use sandman_testenv::file_server::FileServer;
use sandman_testenv::harness::registry;
use sandman_testenv::policies::policy_wasm;

#[tokio::test]
async fn pushed_policy_pulls_back_byte_for_byte_by_tag_and_by_digest() {
    let wasm = policy_wasm("untrusted_to_gvisor");
    let http = HttpClient::new().expect("client");
    let tagged = Reference::parse(&format!("{}/policies/gvisor:v1", registry().address()))
        .expect("reference");
    let pushed = oci::push(&http, &tagged, Bytes::from(wasm.clone()))
        .await
        .expect("push");
    assert_eq!(pushed.component_sha256, sha256_hex(&wasm));

    let pulled = oci::pull(&http, &tagged).await.expect("pull by tag");
    assert_eq!(pulled.as_ref(), wasm.as_slice());

    let pinned = Reference::parse(&format!(
        "{}/policies/gvisor@{}",
        registry().address(),
        pushed.manifest_digest
    ))
    .expect("reference");
    let pulled = oci::pull(&http, &pinned).await.expect("pull by digest");
    assert_eq!(pulled.as_ref(), wasm.as_slice());
}

#[tokio::test]
async fn pulling_an_unknown_tag_names_the_status() {
    let http = HttpClient::new().expect("client");
    let missing = Reference::parse(&format!("{}/policies/absent:v9", registry().address()))
        .expect("reference");
    let error = oci::pull(&http, &missing).await.expect_err("no such tag");
    assert!(
        matches!(error, FetchError::Status(_, status) if status == 404),
        "{error}"
    );
}

#[tokio::test]
async fn url_source_is_fetched_and_unknown_paths_are_404() {
    let server = FileServer::start().expect("file server");
    server.put("/policies/p.wasm", b"\0asm component".to_vec());
    let http = HttpClient::new().expect("client");
    let body = http
        .get(&server.url("/policies/p.wasm"), &[])
        .await
        .expect("get")
        .body;
    assert_eq!(body.as_ref(), b"\0asm component");
    let error = http
        .get(&server.url("/nothing"), &[])
        .await
        .expect_err("404");
    assert!(error.to_string().contains("404"), "{error}");
}
