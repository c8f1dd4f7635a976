//! Helpers of the gateway tests: a Sandbox that opted in, its container played on the pod's
//! IP, and requests through a gateway.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::ContainerPort;
use sandman::api::{GatewaySpec, OperatingMode, Phase, Sandbox};
use sandman::gateway::{Gateway, Options};
use sandman_testenv::file_server::FileServer;
use sandman_testenv::harness::{TestContext, eventually};

use super::{WAIT, sandbox, sandboxes};

pub const PORT: i32 = 8080;

pub fn options(ctx: &TestContext) -> Options {
    Options {
        listen: "127.0.0.1:0".parse().expect("address"),
        namespace: Some(ctx.namespace.clone()),
        hold: Duration::from_secs(30),
        ..Options::default()
    }
}

/// A Sandbox that opted in to the gateway, declaring port 8080.
pub fn reachable(name: &str, mode: OperatingMode) -> Sandbox {
    let mut sandbox = sandbox(name, false);
    sandbox.spec.operating_mode = mode;
    sandbox.spec.pod_template.spec.containers[0].ports = Some(vec![ContainerPort {
        container_port: PORT,
        ..Default::default()
    }]);
    sandbox.spec.gateway = Some(GatewaySpec {
        enabled: true,
        ..GatewaySpec::default()
    });
    sandbox
}

/// The pod IP of Sandbox `name`, once it runs.
pub async fn running_pod_ip(api: &kube::Api<Sandbox>, name: &str) -> String {
    eventually(&format!("{name} to run with a pod IP"), WAIT, || async {
        let status = api.get(name).await.ok()?.status?;
        (status.phase == Some(Phase::Running))
            .then(|| status.pod_ips.first().cloned())
            .flatten()
    })
    .await
}

/// Serves `hello from <name>` on the pod's IP once the Sandbox runs.
pub fn play_container(ctx: &TestContext, name: &str) -> tokio::task::JoinHandle<FileServer> {
    let api = sandboxes(ctx);
    let name = name.to_string();
    tokio::spawn(async move {
        let ip = running_pod_ip(&api, &name).await;
        let server = FileServer::start_on(&format!("{ip}:{PORT}")).expect("listen on the pod IP");
        server.put("*", format!("hello from {name}").into_bytes());
        server
    })
}

pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn get(
    gateway: &Gateway,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut request = http::Request::get(format!("http://{}{path}", gateway.addr));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client()
        .request(request.body(Empty::new()).expect("request"))
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}
