//! OpenTelemetry traces (cargo feature `otel`): the operator, run with `--otlp-endpoint`, sends
//! its reconcile and policy spans to a loopback OTLP/HTTP receiver, one trace per reconcile.
#![cfg(feature = "otel")]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use kube::api::{Api, PostParams};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sandman::api::{Phase, SandboxPolicy};
use sandman_testenv::harness::{TestContext, eventually};

/// Every span received, with the service name of its resource.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver on loopback that keeps every span it is sent.
async fn receiver() -> (std::net::SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let received: Received = Arc::default();
    let spans = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let spans = spans.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let spans = spans.clone();
                        async move {
                            let path = request.uri().path().to_string();
                            let body = request.into_body().collect().await?.to_bytes();
                            if path == "/v1/traces"
                                && let Ok(export) = ExportTraceServiceRequest::decode(body)
                            {
                                let mut spans = spans.lock().expect("spans");
                                for resource in export.resource_spans {
                                    let service = resource
                                        .resource
                                        .iter()
                                        .flat_map(|r| &r.attributes)
                                        .find(|a| a.key == "service.name")
                                        .and_then(|a| a.value.as_ref())
                                        .and_then(|v| match &v.value {
                                            Some(Value::StringValue(s)) => Some(s.clone()),
                                            _ => None,
                                        })
                                        .unwrap_or_default();
                                    for scope in resource.scope_spans {
                                        for span in scope.spans {
                                            spans.push((service.clone(), span));
                                        }
                                    }
                                }
                            }
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::new())))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn attributes(span: &Span) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some((a.key.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// `sandman <args>` for this test's namespace, exporting its spans to `endpoint`.
fn sandman(ctx: &TestContext, args: &[&str], endpoint: &str) -> KillOnDrop {
    Command::new(env!("CARGO_BIN_EXE_sandman"))
        .args(args)
        .args(["--namespace", &ctx.namespace, "--metrics-listen", "off"])
        .args(["--otlp-endpoint", endpoint])
        .env("KUBECONFIG", ctx.kubeconfig())
        .env("RUST_LOG", "warn,sandman=info")
        // Send spans within a fraction of a second, not the default five.
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(KillOnDrop)
        .expect("start sandman")
}

fn operator(ctx: &TestContext, endpoint: &str) -> KillOnDrop {
    let selector = format!("sandman.dev/test-namespace={}", ctx.namespace);
    sandman(ctx, &["run", "--policy-selector", &selector], endpoint)
}

fn gateway(ctx: &TestContext, endpoint: &str, listen: &str) -> KillOnDrop {
    sandman(ctx, &["gateway", "--listen", listen], endpoint)
}

fn gvisor_policy(ctx: &TestContext) -> SandboxPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sandman.dev/v1alpha1",
        "kind": "SandboxPolicy",
        "metadata": {
            "name": format!("{}-gvisor", ctx.namespace),
            "labels": { "sandman.dev/test-namespace": ctx.namespace },
        },
        "spec": {
            "match": { "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ctx.namespace } } },
            "cel": {
                "isolation": "{'runtimeClassName': 'gvisor', 'reason': 'every Sandbox here'}",
                "limits": { "timeout": "5s" },
            },
        },
    }))
    .expect("SandboxPolicy")
}

#[tokio::test]
async fn traces_follow_a_reconcile_into_its_policy() {
    let ctx = TestContext::new("otel_traces").await;
    let (addr, received) = receiver().await;
    let mut operator = operator(&ctx, &format!("http://{addr}"));
    let policy = gvisor_policy(&ctx);
    let policy_name = policy.metadata.name.clone().expect("name");
    let policies: Api<SandboxPolicy> = Api::all(ctx.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the policy");
    wait_ready_reason(&policies, &policy_name, "Loaded").await;
    create(&ctx, &sandbox("traced", false)).await;
    wait_phase(&ctx, "traced", Phase::Running).await;

    // A policy evaluation whose parent is the reconcile of that Sandbox: the span crossed
    // from the async reconcile to the blocking pool.
    let (reconcile, evaluation) = eventually("the reconcile and policy spans", WAIT, || async {
        let spans = received.lock().expect("spans").clone();
        let evaluation = spans.iter().map(|(_, s)| s).find(|s| {
            let a = attributes(s);
            s.name == "policy.evaluate"
                && a.get("policy") == Some(&policy_name)
                && a.get("hook").map(String::as_str) == Some("isolation")
                && a.get("outcome").map(String::as_str) == Some("decided")
        })?;
        let reconcile = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.span_id == evaluation.parent_span_id)?;
        Some((reconcile.clone(), evaluation.clone()))
    })
    .await;
    assert_eq!(reconcile.name, "sandbox.reconcile");
    assert_eq!(reconcile.trace_id, evaluation.trace_id);
    let fields = attributes(&reconcile);
    assert_eq!(fields.get("sandbox").map(String::as_str), Some("traced"));
    assert_eq!(fields.get("namespace"), Some(&ctx.namespace));
    assert!(
        received
            .lock()
            .expect("spans")
            .iter()
            .all(|(service, _)| service == "sandman"),
        "every span names its service"
    );
    assert!(
        received
            .lock()
            .expect("spans")
            .iter()
            .any(|(_, s)| s.name == "policy.reconcile"
                && attributes(s).get("policy") == Some(&policy_name)),
        "the policy's load is traced too"
    );

    operator.kill();
    policies
        .delete(&policy_name, &Default::default())
        .await
        .expect("clean up the policy");
}

#[tokio::test]
async fn gateway_requests_are_traced() {
    let ctx = TestContext::new("otel_gateway").await;
    let (addr, received) = receiver().await;
    let listen = std::net::SocketAddr::from((
        [127, 0, 0, 1],
        sandman_testenv::ports::free_loopback_port().expect("a free port"),
    ));
    let _gateway = gateway(&ctx, &format!("http://{addr}"), &listen.to_string());
    // No such Sandbox: a 404, traced with the route it asked for.
    let path = format!("/sandboxes/{}/nobody/", ctx.namespace);
    eventually("the gateway to answer", WAIT, || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(listen).await.ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        response.starts_with("HTTP/1.1 404").then_some(())
    })
    .await;
    let span = eventually("a gateway.request span", WAIT, || async {
        received
            .lock()
            .expect("spans")
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == "gateway.request")
            .cloned()
    })
    .await;
    let fields = attributes(&span);
    assert_eq!(fields.get("sandbox").map(String::as_str), Some("nobody"));
    assert_eq!(fields.get("namespace"), Some(&ctx.namespace));
    let code = span
        .attributes
        .iter()
        .find(|a| a.key == "http.response.status_code")
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match v.value {
            Some(Value::IntValue(code)) => Some(code),
            _ => None,
        });
    assert_eq!(code, Some(404), "{:?}", span.attributes);
}
