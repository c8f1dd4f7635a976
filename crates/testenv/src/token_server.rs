//! A registry token server on loopback, as Docker Hub and ghcr.io run one: the registry answers
//! 401 with a `Bearer realm=…` challenge, the client asks this server for a token for a scope
//! (with Basic credentials, or anonymously), and retries with it. Tokens are ES256 JWTs whose
//! `x5c` header carries a self-signed certificate that the registry trusts (`rootcertbundle`).
//!
//! Who gets what: anonymous clients may pull repositories under `public/`; the one user may do
//! whatever it asks. Wrong credentials get 401.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::error::Error;

pub const SERVICE: &str = "sandman-test-registry";
pub const ISSUER: &str = "sandman-test-issuer";
pub const USER: &str = "agent";
pub const PASSWORD: &str = "s3cret";

struct Signer {
    key: EcdsaKeyPair,
    certificate_der: Vec<u8>,
    rng: SystemRandom,
}

pub struct TokenServer {
    address: String,
    certificate: PathBuf,
}

impl TokenServer {
    /// Starts the server; the certificate the registry must trust is written to `dir`.
    pub fn start(dir: &Path) -> Result<Self, Error> {
        let failed = |what: &str, e: String| Error::Build(format!("token server: {what}: {e}"));
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let key = rcgen::KeyPair::generate().map_err(|e| failed("key", e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec!["token.sandman.test".to_string()])
            .map_err(|e| failed("certificate", e.to_string()))?;
        let certificate = params
            .self_signed(&key)
            .map_err(|e| failed("certificate", e.to_string()))?;
        let path = dir.join("token-signer.pem");
        std::fs::write(&path, certificate.pem())
            .map_err(Error::io(format!("write {}", path.display())))?;
        let rng = SystemRandom::new();
        let signer = Arc::new(Signer {
            key: EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &rng,
            )
            .map_err(|e| failed("signing key", e.to_string()))?,
            certificate_der: certificate.der().to_vec(),
            rng,
        });
        let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind token server"))?;
        let address = listener
            .local_addr()
            .map_err(Error::io("token server address"))?
            .to_string();
        std::thread::Builder::new()
            .name("token-server".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let signer = signer.clone();
                    std::thread::spawn(move || {
                        let _ = answer(stream, &signer);
                    });
                }
            })
            .map_err(Error::io("start the token server"))?;
        Ok(Self {
            address,
            certificate: path,
        })
    }

    /// The realm the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.address)
    }

    /// The PEM certificate whose key signs the tokens.
    pub fn certificate(&self) -> &Path {
        &self.certificate
    }
}

fn answer(stream: TcpStream, signer: &Signer) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value.trim().to_string()),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length.min(1 << 16)];
    reader.read_exact(&mut body)?;
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut stream = stream;
    let user = match authorization.as_deref().map(basic_user) {
        None => None,
        Some(Some(user)) => Some(user),
        Some(None) => {
            return write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    };
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| *name == "scope")
        .filter_map(|(_, scope)| grant(&decode(scope), user.is_some()))
        .collect();
    let token = sign(signer, access);
    let body =
        serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The user of a Basic header if the password is right; `None` for wrong credentials.
fn basic_user(header: &str) -> Option<String> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (user == USER && password == PASSWORD).then(|| user.to_string())
}

/// `repository:<name>:<actions>` → the access entry this client gets, if any.
fn grant(scope: &str, authenticated: bool) -> Option<serde_json::Value> {
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
    let actions: Vec<&str> = actions
        .split(',')
        .filter(|action| authenticated || (*action == "pull" && name.starts_with("public/")))
        .collect();
    Some(serde_json::json!({ "type": kind, "name": name, "actions": actions }))
}

fn decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sign(signer: &Signer, access: Vec<serde_json::Value>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [STANDARD.encode(&signer.certificate_der)],
    });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": "sandman-test",
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = signer
        .key
        .sign(&signer.rng, signing_input.as_bytes())
        .map(|s| URL_SAFE_NO_PAD.encode(s.as_ref()))
        .unwrap_or_default();
    format!("{signing_input}.{signature}")
}
