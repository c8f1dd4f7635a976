//! A small HTTP(S) client shared by policy distribution and trace export: bounded body size,
//! bounded time, a few redirects, and the system's root certificates.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connect to {0}: {1}")]
    Connect(String, String),
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("read {0}: {1}")]
    Body(String, String),
    #[error("GET {0}: HTTP {1}")]
    Status(String, http::StatusCode),
    #[error("{url}: HTTP {status}: {body}")]
    Rejected {
        url: String,
        status: http::StatusCode,
        body: String,
    },
    #[error("{0}")]
    Protocol(String),
}

/// The largest body the client reads: a policy component, or a manifest.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// How long one request, body included, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

const MAX_REDIRECTS: usize = 5;

/// A response whose body has been read in full.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client that trusts the system's root certificates. Without any (a scratch image),
    /// plain HTTP still works and HTTPS fails with a certificate error that says so.
    pub fn new() -> Result<Self, FetchError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no system root certificates; HTTPS policy sources will fail");
                let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| FetchError::Tls(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends a request and reads the whole response, following redirects for GET and HEAD.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> Result<Response, FetchError> {
        let mut uri: Uri = uri
            .parse()
            .map_err(|e| FetchError::InvalidUrl(format!("{uri}: {e}")))?;
        let origin = uri.clone();
        let mut headers = headers.to_vec();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = Request::builder().method(method.clone()).uri(uri.clone());
            for (name, value) in &headers {
                let value = HeaderValue::from_str(value)
                    .map_err(|e| FetchError::InvalidUrl(format!("header {name}: {e}")))?;
                request = request.header(name, value);
            }
            let request = request
                .body(Full::new(body.clone()))
                .map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
            let response = tokio::time::timeout(REQUEST_TIMEOUT, self.read(request))
                .await
                .map_err(|_| FetchError::Timeout(uri.to_string(), REQUEST_TIMEOUT))??;
            let follows =
                matches!(method, Method::GET | Method::HEAD) && response.status.is_redirection();
            if !follows {
                return Ok(response);
            }
            let location = response
                .headers
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    FetchError::Protocol(format!("{uri}: redirect without a Location"))
                })?;
            uri = resolve(&uri, location)?;
            if !keeps_credentials(&origin, &uri) {
                headers.retain(|(name, _)| *name != header::AUTHORIZATION);
            }
        }
        Err(FetchError::Protocol(format!(
            "{uri}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// Sends one request and reads at most `max_body` bytes of the answer. It follows no
    /// redirect: for a peer that may be hostile (a Sandbox's pod), whose answer must not send
    /// the operator anywhere else.
    pub async fn exchange(
        &self,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
        max_body: usize,
    ) -> Result<Response, FetchError> {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|e| FetchError::InvalidUrl(format!("header {name}: {e}")))?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| FetchError::InvalidUrl(format!("{uri}: {e}")))?;
        tokio::time::timeout(REQUEST_TIMEOUT, self.read_at_most(request, max_body))
            .await
            .map_err(|_| FetchError::Timeout(uri.to_string(), REQUEST_TIMEOUT))?
    }

    async fn read(&self, request: Request<Full<Bytes>>) -> Result<Response, FetchError> {
        self.read_at_most(request, MAX_BODY_BYTES).await
    }

    async fn read_at_most(
        &self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Response, FetchError> {
        let uri = request.uri().to_string();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FetchError::Connect(uri.clone(), format!("{e:#}")))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| FetchError::Body(uri, e.to_string()))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// GET that succeeds only with a 2xx status.
    pub async fn get(
        &self,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
    ) -> Result<Response, FetchError> {
        let response = self.send(Method::GET, uri, headers, Bytes::new()).await?;
        successful(uri, response)
    }
}

/// `response` if its status is 2xx, else the error that names the URL and status.
pub fn successful(url: &str, response: Response) -> Result<Response, FetchError> {
    if !response.status.is_success() {
        return Err(FetchError::Status(url.to_string(), response.status));
    }
    Ok(response)
}

/// Resolves a Location header (absolute, or absolute-path) against the URI it came from.
pub fn resolve(base: &Uri, location: &str) -> Result<Uri, FetchError> {
    if location.contains("://") {
        return location
            .parse()
            .map_err(|e| FetchError::Protocol(format!("bad Location {location}: {e}")));
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base
        .authority()
        .map(|a| a.as_str())
        .ok_or_else(|| FetchError::Protocol(format!("{base}: no authority")))?;
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| FetchError::Protocol(format!("bad Location {location}: {e}")))
}

/// Whether a redirect from `origin` to `to` may carry the origin's credentials: only to the
/// same scheme and authority. A registry's blob redirect goes to storage elsewhere (and
/// presigned storage URLs refuse requests that carry any), and a redirect from https:// to
/// http:// on the same host would send them in clear text.
fn keeps_credentials(origin: &Uri, to: &Uri) -> bool {
    origin.scheme() == to.scheme() && origin.authority() == to.authority()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_with_their_scheme_and_host() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        let origin = uri("https://registry.example/v2/p/manifests/v1");
        assert!(keeps_credentials(
            &origin,
            &uri("https://registry.example/v2/p/blobs/x")
        ));
        assert!(!keeps_credentials(
            &origin,
            &uri("http://registry.example/v2/p/blobs/x")
        ));
        assert!(!keeps_credentials(
            &origin,
            &uri("https://cdn.example/blob")
        ));
        assert!(!keeps_credentials(
            &origin,
            &uri("https://registry.example:8443/v2/")
        ));
    }

    #[test]
    fn relative_locations_resolve_against_the_request() {
        let base: Uri = "http://127.0.0.1:5000/v2/p/blobs/uploads/"
            .parse()
            .expect("uri");
        assert_eq!(
            resolve(&base, "/v2/p/blobs/uploads/abc?_state=x")
                .expect("resolve")
                .to_string(),
            "http://127.0.0.1:5000/v2/p/blobs/uploads/abc?_state=x"
        );
        assert_eq!(
            resolve(&base, "https://cdn.example/blob")
                .expect("resolve")
                .to_string(),
            "https://cdn.example/blob"
        );
    }
}
