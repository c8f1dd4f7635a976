//! Registry authentication as Docker clients do it. A request goes out as it is; a 401 names a
//! challenge in `WWW-Authenticate`: `Basic` (send the credentials) or `Bearer realm=…` (get a
//! token for the repository's scope from the realm, with the credentials when there are any,
//! anonymously otherwise, and send that). Public repositories on Docker Hub and ghcr.io need
//! the anonymous Bearer step too.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, StatusCode, header};

use super::FetchError;
use crate::http_client::{HttpClient, Response};

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    fn basic(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password))
        )
    }

    /// The entry for `registry` (`host[:port]`) in a Docker config (`~/.docker/config.json`,
    /// or a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`).
    pub fn from_docker_config(config: &[u8], registry: &str) -> Result<Option<Self>, String> {
        let config: serde_json::Value =
            serde_json::from_slice(config).map_err(|e| format!("not a Docker config: {e}"))?;
        let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        let wanted = |key: &str| {
            let host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            host == registry
                || (registry == "docker.io"
                    && (host == "index.docker.io" || host == "registry-1.docker.io"))
        };
        let Some(entry) = auths.iter().find(|(key, _)| wanted(key)).map(|(_, e)| e) else {
            return Ok(None);
        };
        let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).map(str::to_string);
        if let (Some(username), Some(password)) = (field("username"), field("password")) {
            return Ok(Some(Self { username, password }));
        }
        let Some(auth) = field("auth") else {
            return Ok(None);
        };
        let decoded = STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                format!("the auth entry for {registry} is not base64 of user:password")
            })?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("the auth entry for {registry} is not user:password"))?;
        Ok(Some(Self {
            username: username.into(),
            password: password.into(),
        }))
    }
}

/// The credentials for `registry` in the user's Docker config (`$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`), as `docker login` leaves them; none when there is no file.
pub fn docker_login(registry: &str) -> Result<Option<Credentials>, String> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::PathBuf::from(home).join(".docker/config.json"),
            None => return Ok(None),
        },
    };
    match std::fs::read(&path) {
        Ok(config) => Credentials::from_docker_config(&config, registry)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("read {}: {e}", path.display())),
    }
}

/// What a 401 asked for.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, parameters) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    // key="value" pairs; values may hold commas (scopes do), so split on quotes.
    let mut rest = parameters.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            "scope" => scope = Some(value.to_string()),
            _ => {}
        }
        rest = next.trim_start_matches(',').trim();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

/// Requests to one repository, remembering the `Authorization` that worked.
pub struct Session<'a> {
    client: &'a HttpClient,
    credentials: Option<&'a Credentials>,
    /// `repository:<name>:pull` or `…:pull,push`, for when the challenge names none.
    scope: String,
    authorization: Option<String>,
}

impl<'a> Session<'a> {
    pub fn new(
        client: &'a HttpClient,
        credentials: Option<&'a Credentials>,
        scope: String,
    ) -> Self {
        Self {
            client,
            credentials,
            scope,
            authorization: None,
        }
    }

    /// Sends a request; on a 401, answers the challenge once and sends it again.
    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> Result<Response, FetchError> {
        let response = self
            .send_once(method.clone(), url, headers, body.clone())
            .await?;
        if response.status != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(|| FetchError::Rejected {
                url: url.to_string(),
                status: response.status,
                body: "401 without a Basic or Bearer challenge".into(),
            })?;
        self.authorization = Some(self.answer(&challenge, url).await?);
        let response = self.send_once(method, url, headers, body).await?;
        if response.status == StatusCode::UNAUTHORIZED {
            return Err(FetchError::Rejected {
                url: url.to_string(),
                status: response.status,
                body: match self.credentials {
                    Some(c) => format!("the registry refused the credentials of {}", c.username),
                    None => "the registry wants credentials (an imagePullSecret)".into(),
                },
            });
        }
        Ok(response)
    }

    /// GET that succeeds only with a 2xx status.
    pub async fn get(
        &mut self,
        url: &str,
        headers: &[(header::HeaderName, &str)],
    ) -> Result<Response, FetchError> {
        let response = self.send(Method::GET, url, headers, Bytes::new()).await?;
        crate::http_client::successful(url, response)
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> Result<Response, FetchError> {
        match &self.authorization {
            None => self.client.send(method, url, headers, body).await,
            Some(authorization) => {
                let mut with: Vec<(header::HeaderName, &str)> = headers.to_vec();
                with.push((header::AUTHORIZATION, authorization));
                self.client.send(method, url, &with, body).await
            }
        }
    }

    async fn answer(&self, challenge: &Challenge, url: &str) -> Result<String, FetchError> {
        match challenge {
            Challenge::Basic => {
                self.credentials
                    .map(Credentials::basic)
                    .ok_or_else(|| FetchError::Rejected {
                        url: url.to_string(),
                        status: StatusCode::UNAUTHORIZED,
                        body: "the registry wants credentials (an imagePullSecret)".into(),
                    })
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope.as_deref().unwrap_or(&self.scope);
                let mut token_url = format!("{realm}?scope={}", encode(scope));
                if let Some(service) = service {
                    token_url.push_str(&format!("&service={}", encode(service)));
                }
                // Credentials go to a token service only over TLS, or on this machine.
                let basic = self
                    .credentials
                    .filter(|_| safe_for_credentials(realm))
                    .map(Credentials::basic);
                let headers: Vec<(header::HeaderName, &str)> = basic
                    .as_deref()
                    .map(|b| vec![(header::AUTHORIZATION, b)])
                    .unwrap_or_default();
                let response = self.client.get(&token_url, &headers).await?;
                let token: serde_json::Value =
                    serde_json::from_slice(&response.body).map_err(|e| {
                        FetchError::Protocol(format!("{realm}: not a token response: {e}"))
                    })?;
                let token = token
                    .get("token")
                    .or_else(|| token.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        FetchError::Protocol(format!("{realm}: no token in the answer"))
                    })?;
                Ok(format!("Bearer {token}"))
            }
        }
    }
}

fn safe_for_credentials(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    super::is_loopback(rest.split('/').next().unwrap_or_default())
}

/// Percent-encoding for a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_read_with_commas_inside_values() {
        let challenge = parse_challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/p:pull,push""#,
        );
        assert_eq!(
            challenge,
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:acme/p:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
    }

    #[test]
    fn docker_configs_give_credentials_by_registry() {
        let config = serde_json::json!({ "auths": {
            "https://index.docker.io/v1/": { "auth": STANDARD.encode("hub:pw") },
            "ghcr.io": { "username": "me", "password": "tok" },
        }})
        .to_string();
        let hub = Credentials::from_docker_config(config.as_bytes(), "docker.io")
            .expect("parse")
            .expect("found");
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "pw")
        );
        let ghcr = Credentials::from_docker_config(config.as_bytes(), "ghcr.io")
            .expect("parse")
            .expect("found");
        assert_eq!(ghcr.username, "me");
        assert_eq!(
            Credentials::from_docker_config(config.as_bytes(), "quay.io").expect("parse"),
            None
        );
        assert!(Credentials::from_docker_config(b"nope", "ghcr.io").is_err());
        assert!(!format!("{ghcr:?}").contains("tok"), "never printed");
    }

    #[test]
    fn credentials_go_only_to_tls_or_loopback_realms() {
        assert!(safe_for_credentials("https://auth.example/token"));
        assert!(safe_for_credentials("http://127.0.0.1:5001/token"));
        assert!(!safe_for_credentials("http://auth.example/token"));
    }
}
