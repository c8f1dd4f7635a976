//! The operator's side of the supervisor protocol: ask for a checkpoint, ask how the agent
//! started. Plain HTTP to the pod's IP, as the gateway reaches pods.
//!
//! The pod is the tenant's: whatever answers on its port may be hostile. So no redirect is
//! followed (it would send the operator to any host), an answer is at most
//! [`MAX_ANSWER_BYTES`], a record that does not match what was asked is refused, and the
//! peer's words reach status only escaped and cut to [`MAX_PEER_TEXT`] bytes.

use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::{CheckpointError, CheckpointRecord, CheckpointRequest, StartReport, signed};
use crate::http_client::HttpClient;

/// The most a supervisor's answer may be: a record or a report is a few hundred bytes.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;
/// The most bytes of a supervisor's own words (a refusal, a reason) that are kept.
pub const MAX_PEER_TEXT: usize = 256;

/// The supervisor of the pod at `ip`.
#[derive(Clone)]
pub struct SupervisorClient {
    http: HttpClient,
}

impl SupervisorClient {
    pub fn new(http: HttpClient) -> Self {
        Self { http }
    }

    fn address(ip: &str, port: u16) -> String {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    }

    /// Asks the supervisor at `ip:port` to checkpoint the agent, signed with the Sandbox's
    /// `token`; waits at most `timeout`.
    pub async fn checkpoint(
        &self,
        (ip, port): (&str, u16),
        token: &str,
        request: &CheckpointRequest,
        timeout: Duration,
    ) -> Result<CheckpointRecord, CheckpointError> {
        let address = Self::address(ip, port);
        let failed = |message: String| CheckpointError::Supervisor {
            address: address.clone(),
            message,
        };
        let body = serde_json::to_vec(request).map_err(|e| failed(e.to_string()))?;
        let authorization = signed::authorization(token, "POST", "/checkpoint", &body);
        let response = tokio::time::timeout(
            timeout,
            self.http.exchange(
                Method::POST,
                &format!("http://{address}/checkpoint"),
                &[
                    (http::header::AUTHORIZATION, authorization.as_str()),
                    (http::header::CONTENT_TYPE, "application/json"),
                    // Never a pooled connection: pod IPs are reused, and a connection to the
                    // last pod at this IP must not answer for the next.
                    (http::header::CONNECTION, "close"),
                ],
                Bytes::from(body),
                MAX_ANSWER_BYTES,
            ),
        )
        .await
        .map_err(|_| failed(format!("no checkpoint within {timeout:?}")))?
        .map_err(|e| failed(e.to_string()))?;
        if !response.status.is_success() {
            return Err(failed(refusal(&response.body, response.status)));
        }
        let record: CheckpointRecord = serde_json::from_slice(&response.body)
            .map_err(|e| failed(format!("answer: {}", peer_text(&e.to_string()))))?;
        answers(request, &record).map_err(failed)?;
        Ok(record)
    }

    /// How the supervisor at `ip:port` started the agent (asked with the Sandbox's `token`).
    pub async fn start_report(
        &self,
        (ip, port): (&str, u16),
        token: &str,
    ) -> Result<StartReport, CheckpointError> {
        let address = Self::address(ip, port);
        let failed = |message: String| CheckpointError::Supervisor {
            address: address.clone(),
            message,
        };
        let authorization = signed::authorization(token, "GET", "/status", b"");
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            self.http.exchange(
                Method::GET,
                &format!("http://{address}/status"),
                &[
                    (http::header::AUTHORIZATION, authorization.as_str()),
                    (http::header::CONNECTION, "close"),
                ],
                Bytes::new(),
                MAX_ANSWER_BYTES,
            ),
        )
        .await
        .map_err(|_| failed("no answer within 5s".into()))?
        .map_err(|e| failed(e.to_string()))?;
        if !response.status.is_success() {
            return Err(failed(refusal(&response.body, response.status)));
        }
        let mut report: StartReport = serde_json::from_slice(&response.body)
            .map_err(|e| failed(format!("answer: {}", peer_text(&e.to_string()))))?;
        report.reason = report.reason.as_deref().map(peer_text);
        if let Some(image) = &report.image
            && !super::image::is_image_name(image)
        {
            return Err(failed(format!(
                "answer names no image: {}",
                peer_text(image)
            )));
        }
        Ok(report)
    }
}

/// Whether `record` is the checkpoint `request` asked for: the same Sandbox, pod and
/// suspension, an image name the store could hold, and a sha256 that is one.
fn answers(request: &CheckpointRequest, record: &CheckpointRecord) -> Result<(), String> {
    let mismatch = |what: &str, got: &str, asked: &str| {
        Err(format!(
            "the answer is for {what} {}, not {asked}",
            peer_text(got)
        ))
    };
    if record.sandbox_uid != request.sandbox_uid {
        return mismatch("Sandbox", &record.sandbox_uid, &request.sandbox_uid);
    }
    if record.pod != request.pod {
        return mismatch("pod", &record.pod, &request.pod);
    }
    if record.suspension != request.suspension {
        return mismatch(
            "suspension",
            &record.suspension.to_string(),
            &request.suspension.to_string(),
        );
    }
    if !super::image::is_image_name(&record.image) {
        return Err(format!(
            "the answer names no image: {}",
            peer_text(&record.image)
        ));
    }
    let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if record.sha256.len() != 64 || !record.sha256.bytes().all(hex) {
        return Err(format!(
            "the answer's sha256 is not one: {}",
            peer_text(&record.sha256)
        ));
    }
    Ok(())
}

/// The supervisor's own words for a refusal, else the status.
fn refusal(body: &[u8], status: http::StatusCode) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(peer_text))
        .unwrap_or_else(|| format!("HTTP {status}"))
}

/// A peer's words as status may show them: control characters escaped, and at most
/// [`MAX_PEER_TEXT`] bytes.
pub fn peer_text(words: &str) -> String {
    crate::text::clip(crate::text::one_line(words), MAX_PEER_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one canned answer to every connection on loopback, counting them.
    async fn serve(answer: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = served.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (port, served)
    }

    fn http(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
            body.len()
        )
    }

    fn client() -> SupervisorClient {
        SupervisorClient::new(HttpClient::new().expect("client"))
    }

    fn request() -> CheckpointRequest {
        CheckpointRequest {
            sandbox_uid: "uid-1".into(),
            pod: "agent-1".into(),
            suspension: 3,
            keep: 2,
            timeout_seconds: Some(30),
        }
    }

    fn record(uid: &str, image: &str, sha256: &str) -> String {
        serde_json::json!({
            "image": image, "sha256": sha256, "sizeBytes": 10,
            "takenAt": "2026-12-01T00:00:00Z", "sandboxUid": uid, "pod": "agent-1",
            "suspension": 3, "tookMs": 5,
        })
        .to_string()
    }

    #[tokio::test]
    async fn a_redirect_from_the_pod_is_not_followed() {
        let (elsewhere, visited) = serve(http("200 OK", "", "{}")).await;
        let location = format!("location: http://127.0.0.1:{elsewhere}/status\r\n");
        let (pod, _) = serve(http("302 Found", &location, "")).await;
        let error = client()
            .start_report(("127.0.0.1", pod), "token")
            .await
            .expect_err("a redirect is no report");
        assert!(error.to_string().contains("302"), "{error}");
        assert_eq!(visited.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_record_for_another_sandbox_or_image_is_refused() {
        let sha = "ab".repeat(32);
        let cases = [
            record("uid-2", "1700000000000-s3", &sha),
            record("uid-1", "../../etc", &sha),
            record("uid-1", "1700000000000-s3", "not-a-digest"),
        ];
        for body in cases {
            let (pod, _) = serve(http("200 OK", "", &body)).await;
            let answer = client()
                .checkpoint(
                    ("127.0.0.1", pod),
                    "token",
                    &request(),
                    Duration::from_secs(30),
                )
                .await;
            assert!(answer.is_err(), "{body} was taken");
        }
        let (pod, _) = serve(http(
            "200 OK",
            "",
            &record("uid-1", "1700000000000-s3", &sha),
        ))
        .await;
        let taken = client()
            .checkpoint(
                ("127.0.0.1", pod),
                "token",
                &request(),
                Duration::from_secs(30),
            )
            .await
            .expect("the record asked for");
        assert_eq!(taken.image, "1700000000000-s3");
    }

    #[tokio::test]
    async fn a_refusal_reaches_status_escaped_and_bounded() {
        let words = format!("line\u{1b}[31mred\n{}", "x".repeat(10_000));
        let body = serde_json::json!({ "error": words }).to_string();
        let (pod, _) = serve(http("409 Conflict", "", &body)).await;
        let error = client()
            .checkpoint(
                ("127.0.0.1", pod),
                "token",
                &request(),
                Duration::from_secs(30),
            )
            .await
            .expect_err("refused")
            .to_string();
        assert!(!error.chars().any(char::is_control), "{error:?}");
        assert!(error.len() < MAX_PEER_TEXT + 200, "{} bytes", error.len());
    }

    #[tokio::test]
    async fn an_answer_larger_than_a_record_is_not_read() {
        let body = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_ANSWER_BYTES));
        let (pod, _) = serve(http("200 OK", "", &body)).await;
        let error = client()
            .start_report(("127.0.0.1", pod), "token")
            .await
            .expect_err("too large");
        assert!(error.to_string().contains("length limit"), "{error}");
    }

    #[tokio::test]
    async fn requests_are_signed_with_the_sandboxs_token_and_carry_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let heard = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut bytes = Vec::new();
            let mut chunk = [0u8; 4096];
            // Head and body: the body ends the JSON object.
            while !bytes.ends_with(b"}") {
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed early");
                bytes.extend_from_slice(&chunk[..n]);
            }
            let _ = stream
                .write_all(http("500 Oops", "", "{}").as_bytes())
                .await;
            String::from_utf8(bytes).expect("text")
        });
        let _ = client()
            .checkpoint(
                ("127.0.0.1", port),
                "the-token",
                &request(),
                Duration::from_secs(30),
            )
            .await;
        let heard = heard.await.expect("heard");
        let (head, body) = heard.split_once("\r\n\r\n").expect("head and body");
        let authorization = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .expect("an authorization header");
        assert_eq!(
            signed::check_request(
                "the-token",
                "POST",
                "/checkpoint",
                body.as_bytes(),
                Some(authorization)
            ),
            Ok(())
        );
        assert!(
            !heard.contains("the-token"),
            "the token itself never crosses the network"
        );
        let asked: CheckpointRequest = serde_json::from_str(body).expect("request");
        assert_eq!(asked.timeout_seconds, Some(30));
    }
}
