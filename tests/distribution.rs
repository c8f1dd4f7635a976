//! Policy distribution against real servers on loopback: Debian's `docker-registry` for OCI
//! artifacts, and a plain HTTP server for URLs.

use bytes::Bytes;
use sandman::distribution::oci::{self, Reference};
use sandman::distribution::{FetchError, sha256_hex};
use sandman::http_client::HttpClient;
use sandman_testenv::file_server::FileServer;
use sandman_testenv::harness::registry;
use sandman_testenv::policies::policy_wasm;

#[tokio::test]
async fn pushed_policy_pulls_back_byte_for_byte_by_tag_and_by_digest() {
    let wasm = policy_wasm("untrusted_to_gvisor");
    let http = HttpClient::new().expect("client");
    let tagged = Reference::parse(&format!("{}/policies/gvisor:v1", registry().address()))
        .expect("reference");
    let pushed = oci::push(&http, &tagged, Bytes::from(wasm.clone()), None)
        .await
        .expect("push");
    assert_eq!(pushed.component_sha256, sha256_hex(&wasm));

    let pulled = oci::pull(&http, &tagged, None).await.expect("pull by tag");
    assert_eq!(pulled.as_ref(), wasm.as_slice());

    let pinned = Reference::parse(&format!(
        "{}/policies/gvisor@{}",
        registry().address(),
        pushed.manifest_digest
    ))
    .expect("reference");
    let pulled = oci::pull(&http, &pinned, None)
        .await
        .expect("pull by digest");
    assert_eq!(pulled.as_ref(), wasm.as_slice());
}

#[tokio::test]
async fn pulling_an_unknown_tag_names_the_status() {
    let http = HttpClient::new().expect("client");
    let missing = Reference::parse(&format!("{}/policies/absent:v9", registry().address()))
        .expect("reference");
    let error = oci::pull(&http, &missing, None)
        .await
        .expect_err("no such tag");
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

/// The registry that wants Bearer tokens, as Docker Hub and ghcr.io do: the token server lets
/// anyone pull `public/…` and the one user do anything.
#[tokio::test]
async fn bearer_challenges_are_answered_anonymously_and_with_credentials() {
    use sandman::distribution::auth::Credentials;
    use sandman_testenv::harness::token_registry;
    use sandman_testenv::token_server::{PASSWORD, USER};

    let wasm = policy_wasm("untrusted_to_gvisor");
    let http = HttpClient::new().expect("client");
    let user = Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let reference = |repository: &str| {
        Reference::parse(&format!("{}/{repository}:v1", token_registry().address()))
            .expect("reference")
    };

    let private = reference("private/gvisor");
    let anonymous_push = oci::push(&http, &private, Bytes::from(wasm.clone()), None)
        .await
        .expect_err("anonymous clients may not push");
    assert!(
        anonymous_push.to_string().contains("wants credentials"),
        "{anonymous_push}"
    );
    oci::push(&http, &private, Bytes::from(wasm.clone()), Some(&user))
        .await
        .expect("push with credentials");
    let pulled = oci::pull(&http, &private, Some(&user))
        .await
        .expect("pull with credentials");
    assert_eq!(pulled.as_ref(), wasm.as_slice());
    let anonymous_pull = oci::pull(&http, &private, None)
        .await
        .expect_err("a private repository needs credentials");
    assert!(
        anonymous_pull.to_string().contains("wants credentials"),
        "{anonymous_pull}"
    );
    let wrong = Credentials {
        username: USER.into(),
        password: "wrong".into(),
    };
    let refused = oci::pull(&http, &private, Some(&wrong))
        .await
        .expect_err("wrong password");
    assert!(refused.to_string().contains("401"), "{refused}");

    // A public repository: anonymous pulls get an anonymous token.
    let public = reference("public/gvisor");
    oci::push(&http, &public, Bytes::from(wasm.clone()), Some(&user))
        .await
        .expect("push");
    let pulled = oci::pull(&http, &public, None)
        .await
        .expect("anonymous pull of a public repository");
    assert_eq!(pulled.as_ref(), wasm.as_slice());
}
