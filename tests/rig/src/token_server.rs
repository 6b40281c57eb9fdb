//! A registry token server on loopback, for the tests to walk the path a
//! public registry's clients walk (ghcr.io's): distribution's token auth.
//! The registry answers 401 with `WWW-Authenticate: Bearer
//! realm=<this server>,service=...,scope=...`; the client GETs the realm
//! with `service` and `scope` (Basic credentials, or none), and gets a JWT
//! (`{"token": ..., "access_token": ...}`) signed ES256 by a certificate
//! whose chain is in the token's `x5c` header and ends at the CA the
//! registry trusts (its `rootcertbundle`). A known user gets what it asks
//! for; anyone else without credentials gets pull only (as a public
//! package); wrong credentials get 401.
//!
//! Also the TLS material of such a test: a CA ([`TestPki`]) that issues the
//! serving certificate of 127.0.0.1 (the registry's and this server's) and
//! the token signing certificate.
//!
//! It serves one connection at a time on a thread (HTTPS, rustls), one
//! request per connection: a test's handful of token requests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::registry::{Credentials, TlsFiles};

/// The `service` (the tokens' audience) the test registry names.
pub const SERVICE: &str = "klm-rig-registry";
/// The `issuer` of the tokens.
pub const ISSUER: &str = "klm-rig-token-server";

/// A test CA and what it issued, as PEM files (and DER for the server).
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate: a client's `--ca-file`.
    pub ca_cert: PathBuf,
    /// The serving certificate of 127.0.0.1 (and its key).
    pub serving: TlsFiles,
    /// The CA the token signing certificate chains to (the registry's
    /// `rootcertbundle`).
    pub token_ca_cert: PathBuf,
    serving_der: (Vec<u8>, Vec<u8>),
    signing_cert_der: Vec<u8>,
    token_ca_der: Vec<u8>,
    signing_key_pkcs8: Vec<u8>,
}

fn ca(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

impl TestPki {
    /// Generates a CA, the serving certificate of 127.0.0.1 and a token
    /// signing certificate (from its own CA) into `dir`.
    pub fn generate(dir: &Path) -> Result<TestPki> {
        std::fs::create_dir_all(dir)?;
        let tls_ca = ca("klm-rig-registry-ca")?;
        let ca_cert = dir.join("ca.crt");
        std::fs::write(&ca_cert, tls_ca.pem())?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
        params.distinguished_name = dn("127.0.0.1");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &tls_ca)?;
        let serving = TlsFiles {
            cert: dir.join("serving.crt"),
            key: dir.join("serving.key"),
        };
        std::fs::write(&serving.cert, cert.pem())?;
        std::fs::write(&serving.key, key.serialize_pem())?;

        let token_ca = ca("klm-rig-token-ca")?;
        let token_ca_cert = dir.join("token-ca.crt");
        std::fs::write(&token_ca_cert, token_ca.pem())?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(ISSUER);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let signing_key = KeyPair::generate()?;
        let signing_cert = params.signed_by(&signing_key, &token_ca)?;
        Ok(TestPki {
            ca_cert,
            serving,
            token_ca_cert,
            serving_der: (cert.der().to_vec(), key.serialize_der()),
            signing_cert_der: signing_cert.der().to_vec(),
            token_ca_der: token_ca.der().to_vec(),
            signing_key_pkcs8: signing_key.serialize_der(),
        })
    }
}

/// The token server, serving until dropped.
#[derive(Debug)]
pub struct TokenServer {
    /// Its URL: the registry's `realm`.
    pub realm: String,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Issuer {
    users: Vec<Credentials>,
    key: EcdsaKeyPair,
    x5c: Vec<String>,
    rng: ring::rand::SystemRandom,
}

impl TokenServer {
    /// Starts on a free port of 127.0.0.1 with `pki`'s serving certificate,
    /// issuing tokens to `users` (and pull-only ones to anonymous clients).
    pub fn start(pki: &TestPki, users: Vec<Credentials>) -> Result<TokenServer> {
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pki.signing_key_pkcs8,
            &rng,
        )
        .map_err(|e| anyhow::anyhow!("the token signing key: {e}"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let issuer = Issuer {
            users,
            key,
            x5c: vec![
                b64.encode(&pki.signing_cert_der),
                b64.encode(&pki.token_ca_der),
            ],
            rng,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![pki.serving_der.0.clone().into()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(pki.serving_der.1.clone().into()),
            )?;
        let tls = Arc::new(tls);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("token-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Err(e) = serve(&tls, &issuer, stream) {
                        tracing::warn!(error = %format!("{e:#}"), "token server");
                    }
                }
            })?;
        Ok(TokenServer {
            realm: format!("https://{addr}/token"),
            stop,
            addr,
            thread: Some(thread),
        })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(tls: &Arc<rustls::ServerConfig>, issuer: &Issuer, stream: TcpStream) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let connection = rustls::ServerConnection::new(tls.clone())?;
    let mut stream = rustls::StreamOwned::new(connection, stream);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || stream.read(&mut byte)? == 0 {
            bail!("no complete request head");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .context("no request line")?;
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    let (status, body) = answer(issuer, target, authorization.as_deref())?;
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        response.push_str("WWW-Authenticate: Basic realm=\"klm-rig-token-server\"\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    stream.conn.send_close_notify();
    stream.flush()?;
    Ok(())
}

/// The status and JSON body answering a GET of `target` (`/token?...`).
fn answer(issuer: &Issuer, target: &str, authorization: Option<&str>) -> Result<(u16, String)> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut scopes = Vec::new();
    let mut service = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "scope" => scopes.push(value.into_owned()),
            "service" => service = Some(value.into_owned()),
            _ => {}
        }
    }
    let user = match authorization {
        None => None,
        Some(value) => {
            let known = value
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|pair| {
                    let (user, password) = pair.split_once(':')?;
                    issuer
                        .users
                        .iter()
                        .find(|c| c.username == user && c.password() == password)
                        .map(|c| c.username.clone())
                });
            match known {
                Some(user) => Some(user),
                None => {
                    return Ok((
                        401,
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}"#
                            .into(),
                    ));
                }
            }
        }
    };
    if service.as_deref() != Some(SERVICE) {
        return Ok((
            401,
            format!(
                r#"{{"errors":[{{"code":"UNAUTHORIZED","message":"unknown service {service:?}"}}]}}"#
            ),
        ));
    }
    let mut access = Vec::new();
    for scope in &scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let actions: Vec<&str> = actions
            .split(',')
            .filter(|a| user.is_some() || *a == "pull")
            .collect();
        access.push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut jti = [0u8; 16];
    ring::rand::SecureRandom::fill(&issuer.rng, &mut jti)
        .map_err(|_| anyhow::anyhow!("no random bytes"))?;
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": crate::image::sha256_hex(&jti),
        "access": access,
    });
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": issuer.x5c});
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        url.encode(serde_json::to_vec(&header)?),
        url.encode(serde_json::to_vec(&claims)?)
    );
    let signature = issuer
        .key
        .sign(&issuer.rng, signing_input.as_bytes())
        .map_err(|_| anyhow::anyhow!("signing the token"))?;
    let token = format!("{signing_input}.{}", url.encode(signature.as_ref()));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
    Ok((200, body.to_string()))
}
