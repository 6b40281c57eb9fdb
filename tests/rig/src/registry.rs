//! A client of the distribution (OCI) registry API, the one `klm-rig image
//! publish` pushes releases with, to the rig's loopback registry and to
//! ghcr.io alike; and Debian's `docker-registry` (the CNCF distribution
//! registry 2.8, `tests/argo/host-packages.sh` installs it) for the tests:
//! plain HTTP without auth for the Argo tier's node, or HTTPS with token or
//! htpasswd auth ([`ServerOptions`]) to walk a public registry's path.
//!
//! The client ([`Registry`]) speaks HTTPS (rustls with ring; the system's
//! roots plus an optional CA file) or plain HTTP when asked (as helm's
//! `--plain-http`), and answers the registry's auth challenge: on a 401 it
//! reads `WWW-Authenticate`; `Basic` resends with the credentials, `Bearer
//! realm=...,service=...,scope=...` fetches a token from the realm (with the
//! credentials when there are some, anonymously otherwise), caches it per
//! scope and retries with it. Credentials come from the environment
//! ([`Credentials::from_env`]) or stdin, never from the command line, and are
//! never logged. The index is pushed with blob uploads (POST, then PUT with
//! the digest), each platform's manifest by digest, the index by tag; blobs
//! and manifests are read back the way a client pulls, redirects followed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::image::sha256_hex;
use crate::oci::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, blob_path};
use crate::oci_check::BlobSource;

/// Where Debian installs the registry.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// The variable naming the registry user.
pub const USER_ENV: &str = "KLM_REGISTRY_USER";
/// The variable holding the registry password (or token).
pub const PASSWORD_ENV: &str = "KLM_REGISTRY_PASSWORD";

/// How long one request (a blob upload included) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Redirects followed on a GET or HEAD (ghcr.io sends blobs to a CDN).
const MAX_REDIRECTS: usize = 5;

/// A registry user and password (or token). `Debug` never prints the
/// password.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// A user and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The password (or token), for helm's `--password-stdin`.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `KLM_REGISTRY_USER` and `KLM_REGISTRY_PASSWORD`: both or neither
    /// (anonymous).
    pub fn from_env() -> Result<Option<Credentials>> {
        let user = std::env::var(USER_ENV).ok().filter(|v| !v.is_empty());
        let password = std::env::var(PASSWORD_ENV).ok().filter(|v| !v.is_empty());
        match (user, password) {
            (Some(user), Some(password)) => Ok(Some(Credentials::new(user, password))),
            (None, None) => Ok(None),
            (Some(_), None) => bail!("{USER_ENV} is set but {PASSWORD_ENV} is not"),
            (None, Some(_)) => bail!("{PASSWORD_ENV} is set but {USER_ENV} is not"),
        }
    }

    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Plain HTTP instead of HTTPS (a loopback registry; as helm's
    /// `--plain-http`).
    pub plain_http: bool,
    /// A CA bundle (PEM) trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Credentials for the auth challenge; anonymous without.
    pub credentials: Option<Credentials>,
}

/// An HTTP response: status, headers (names lowercase), body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(500).collect()
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A registry at `host` (`ghcr.io`, `127.0.0.1:5000`): the distribution API
/// over HTTPS or plain HTTP, with the auth challenge answered (see the
/// module's doc). Its calls block; the HTTP client runs on a runtime of its
/// own, so they may be made from sync code running on another runtime.
pub struct Registry {
    host: String,
    connection: Connection,
    client: HttpClient,
    runtime: Option<tokio::runtime::Runtime>,
    /// The `Authorization` value per scope (`""`: the registry's root).
    authorizations: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The scope a repository's pull (and push) needs, as the distribution
/// token spec writes it.
pub fn repository_scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

impl Registry {
    /// A client of the registry at `host` (`name[:port]`, no scheme).
    pub fn new(host: &str, connection: Connection) -> Result<Registry> {
        ensure!(
            !host.contains("://") && !host.contains('/') && !host.is_empty(),
            "a registry host is name[:port], not {host}"
        );
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(ca) = &connection.ca_file {
            use rustls_pki_types::pem::PemObject as _;
            let mut added = 0;
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading the CA file {}", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("a certificate of {}", ca.display()))?)
                    .with_context(|| format!("a certificate of {}", ca.display()))?;
                added += 1;
            }
            ensure!(added > 0, "{} holds no PEM certificate", ca.display());
        }
        ensure!(
            connection.plain_http || !roots.is_empty(),
            "no CA certificate to verify {host} with (no system roots, no CA file)"
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("registry-client")
            .enable_all()
            .build()?;
        Ok(Registry {
            host: host.into(),
            connection,
            client,
            runtime: Some(runtime),
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// A loopback registry over plain HTTP without auth (the rig's).
    pub fn loopback(host: &str) -> Result<Registry> {
        Registry::new(
            host,
            Connection {
                plain_http: true,
                ..Connection::default()
            },
        )
    }

    /// `name[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How it is reached.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// helm's flags to reach the same registry (`--plain-http`, `--ca-file`).
    pub fn helm_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if self.connection.plain_http {
            flags.push("--plain-http".into());
        }
        if let Some(ca) = &self.connection.ca_file {
            flags.push("--ca-file".into());
            flags.push(ca.display().to_string());
        }
        flags
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.connection.plain_http {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}{path}", self.host)
    }

    /// Waits until the registry answers `GET /v2/` (200, or 401 when it
    /// wants auth: it is up and its TLS handshake passed).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = self.url("/v2/");
        loop {
            match self.send_once("GET", &url, &[], Bytes::new(), None) {
                Ok(response) if response.status == 200 || response.status == 401 => {
                    return Ok(());
                }
                result if Instant::now() > deadline => {
                    bail!(
                        "the registry on {} is not ready after {timeout:?}: {result:?}",
                        self.host
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Authenticates at the registry's root (`GET /v2/`, the challenge
    /// answered), so that wrong credentials fail before anything is pushed.
    pub fn login(&self) -> Result<()> {
        let response = self.request("GET", "/v2/", &[], None, "")?;
        ensure!(
            response.status == 200,
            "GET {}/v2/ as {}: HTTP {}: {}",
            self.host,
            self.who(),
            response.status,
            response.text()
        );
        Ok(())
    }

    /// One request to `path` (`/v2/...`) or to an absolute URL (an upload's
    /// location), authorized for `scope` ([`repository_scope`], or `""`):
    /// on a 401 the challenge is answered once and the request resent. GET
    /// and HEAD follow redirects (without the authorization when the host
    /// changes).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        scope: &str,
    ) -> Result<Response> {
        let url = if path.starts_with("https://") || path.starts_with("http://") {
            path.to_string()
        } else {
            self.url(path)
        };
        let body = Bytes::copy_from_slice(body.unwrap_or_default());
        let cached = self.authorizations.lock().unwrap().get(scope).cloned();
        let response = self.send_following(method, &url, headers, body.clone(), cached)?;
        if response.status != 401 {
            return Ok(response);
        }
        let challenge = response
            .header("www-authenticate")
            .with_context(|| format!("{method} {url}: HTTP 401 without a WWW-Authenticate"))?
            .to_string();
        let authorization = self.answer(&challenge, scope)?;
        self.authorizations
            .lock()
            .unwrap()
            .insert(scope.to_string(), authorization.clone());
        let response = self.send_following(method, &url, headers, body, Some(authorization))?;
        if response.status == 401 || response.status == 403 {
            bail!(
                "{method} {url}: HTTP {} after authenticating as {}: the registry refused the credentials or their access to {scope:?} (check {USER_ENV} and {PASSWORD_ENV}): {}",
                response.status,
                self.who(),
                response.text()
            );
        }
        Ok(response)
    }

    fn who(&self) -> String {
        match &self.connection.credentials {
            Some(c) => format!("{:?}", c.username),
            None => "anonymous".into(),
        }
    }

    /// The `Authorization` value that answers `challenge` for `scope`.
    fn answer(&self, challenge: &str, scope: &str) -> Result<String> {
        let (scheme, params) = parse_challenge(challenge)?;
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            let credentials = self.connection.credentials.as_ref().with_context(|| {
                format!(
                    "{} asks for a user and password (Basic): set {USER_ENV} and {PASSWORD_ENV}",
                    self.host
                )
            })?;
            return Ok(credentials.basic());
        }
        ensure!(
            scheme.eq_ignore_ascii_case("bearer"),
            "{} asks for {scheme} auth, which this client does not speak",
            self.host
        );
        let realm = param("realm").context("a Bearer challenge without a realm")?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(service) = param("service") {
            query.append_pair("service", service);
        }
        if !scope.is_empty() {
            query.append_pair("scope", scope);
        }
        // What the registry asked for too, unless this is the root (`GET
        // /v2/`: ghcr.io names a placeholder repository there; a login asks
        // for no scope, as docker's does).
        if let Some(asked) = param("scope").filter(|s| !scope.is_empty() && *s != scope) {
            query.append_pair("scope", asked);
        }
        let query = query.finish();
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = if query.is_empty() {
            realm.to_string()
        } else {
            format!("{realm}{separator}{query}")
        };
        let headers: Vec<(&str, String)> = self
            .connection
            .credentials
            .iter()
            .map(|c| ("authorization", c.basic()))
            .collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = self
            .send_once("GET", &url, &headers, Bytes::new(), None)
            .with_context(|| format!("asking the token server {realm} for a token"))?;
        if response.status == 401 || response.status == 403 {
            bail!(
                "the token server {realm} refused {} (HTTP {}): check {USER_ENV} and {PASSWORD_ENV}: {}",
                self.who(),
                response.status,
                response.text()
            );
        }
        ensure!(
            response.status == 200,
            "the token server {realm}: HTTP {}: {}",
            response.status,
            response.text()
        );
        let parsed: serde_json::Value = serde_json::from_slice(&response.body)
            .with_context(|| format!("the token server {realm} answered no JSON"))?;
        let token = parsed["token"]
            .as_str()
            .or_else(|| parsed["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .with_context(|| format!("the token server {realm} gave no token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// Sends, following a GET's or HEAD's redirects.
    fn send_following(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        authorization: Option<String>,
    ) -> Result<Response> {
        let mut url = url.to_string();
        let mut authorization = authorization;
        for _ in 0..=MAX_REDIRECTS {
            let response =
                self.send_once(method, &url, headers, body.clone(), authorization.clone())?;
            let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308)
                && (method == "GET" || method == "HEAD");
            let Some(location) = response.header("location").filter(|_| redirect) else {
                return Ok(response);
            };
            let next = resolve(&url, location)?;
            if origin(&next) != origin(&url) {
                authorization = None;
            }
            url = next;
        }
        bail!("{method} {url}: more than {MAX_REDIRECTS} redirects")
    }

    /// One HTTP request on the client's runtime.
    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        authorization: Option<String>,
    ) -> Result<Response> {
        let uri: http::Uri = url.parse().with_context(|| format!("the URL {url}"))?;
        if uri.scheme_str() == Some("http") {
            ensure!(
                self.connection.plain_http,
                "{url} is plain HTTP: pass --plain-http to allow it"
            );
        }
        let mut builder = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("user-agent", "klm-rig");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(authorization) = authorization {
            let mut value = http::HeaderValue::from_str(&authorization)?;
            value.set_sensitive(true);
            builder = builder.header("authorization", value);
        }
        if method == "PUT" || method == "POST" || method == "PATCH" {
            builder = builder.header("content-length", body.len());
        }
        let request = builder.body(Full::new(body))?;
        let client = self.client.clone();
        let what = format!("{method} {url}");
        let (sender, receiver) = std::sync::mpsc::channel();
        let runtime = self.runtime.as_ref().context("the client is shut down")?;
        runtime.spawn(async move {
            let result = tokio::time::timeout(REQUEST_TIMEOUT, async move {
                let response = client.request(request).await?;
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_ascii_lowercase(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = response.into_body().collect().await?.to_bytes().to_vec();
                anyhow::Ok(Response {
                    status,
                    headers,
                    body,
                })
            })
            .await;
            let _ = sender.send(result);
        });
        match receiver.recv() {
            Ok(Ok(result)) => result.with_context(|| what.clone()),
            Ok(Err(_)) => bail!("{what}: no answer in {REQUEST_TIMEOUT:?}"),
            Err(_) => bail!("{what}: the request was dropped"),
        }
    }

    /// Pushes the OCI layout in `layout` (as [`crate::oci::write_layout`]
    /// writes it) as `repository` with every tag in `tags`: every blob the
    /// index needs (those the registry has are skipped), each platform's
    /// manifest by digest, then the index by each tag. Returns the index
    /// digest.
    pub fn push_layout(&self, layout: &Path, repository: &str, tags: &[String]) -> Result<String> {
        ensure!(!tags.is_empty(), "no tag to push {repository} as");
        let source = crate::oci_check::Layout {
            dir: layout.to_path_buf(),
        };
        let digest = source.index_digest()?;
        let blobs = layout.join("blobs/sha256");
        let index = std::fs::read(blob_path(&blobs, &digest))?;
        let parsed: serde_json::Value = serde_json::from_slice(&index)?;
        for entry in parsed["manifests"].as_array().context("no manifests")? {
            let manifest_digest = entry["digest"].as_str().context("no digest")?;
            let manifest = std::fs::read(blob_path(&blobs, manifest_digest))?;
            let parsed: serde_json::Value = serde_json::from_slice(&manifest)?;
            let layers = parsed["layers"].as_array().context("no layers")?;
            for descriptor in layers.iter().chain([&parsed["config"]]) {
                let blob = descriptor["digest"].as_str().context("no digest")?;
                self.push_blob(repository, blob, &blobs)?;
            }
            self.put_manifest(repository, manifest_digest, MANIFEST_MEDIA_TYPE, &manifest)?;
        }
        for tag in tags {
            self.put_manifest(repository, tag, INDEX_MEDIA_TYPE, &index)?;
        }
        Ok(digest)
    }

    fn push_blob(&self, repository: &str, digest: &str, blobs: &Path) -> Result<()> {
        let scope = repository_scope(repository, true);
        let path = format!("/v2/{repository}/blobs/{digest}");
        if self.request("HEAD", &path, &[], None, &scope)?.status == 200 {
            return Ok(());
        }
        let started = self.request(
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            &[],
            Some(&[]),
            &scope,
        )?;
        ensure!(
            started.status == 202,
            "starting an upload of {digest} to {}/{repository}: HTTP {}: {}",
            self.host,
            started.status,
            started.text()
        );
        let location = started.header("location").context("no upload location")?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let bytes = std::fs::read(blob_path(blobs, digest))?;
        let done = self.request(
            "PUT",
            &format!("{location}{separator}digest={digest}"),
            &[("content-type", "application/octet-stream")],
            Some(&bytes),
            &scope,
        )?;
        ensure!(
            done.status == 201,
            "uploading {digest} to {}/{repository}: HTTP {}: {}",
            self.host,
            done.status,
            done.text()
        );
        Ok(())
    }

    fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let response = self.request(
            "PUT",
            &format!("/v2/{repository}/manifests/{reference}"),
            &[("content-type", media_type)],
            Some(bytes),
            &repository_scope(repository, true),
        )?;
        ensure!(
            response.status == 201,
            "putting manifest {reference} to {}/{repository}: HTTP {}: {}",
            self.host,
            response.status,
            response.text()
        );
        let digest = format!("sha256:{}", sha256_hex(bytes));
        if let Some(stored) = response.header("docker-content-digest") {
            ensure!(
                stored == digest,
                "the registry stored {reference} as {stored}, not {digest}"
            );
        }
        Ok(())
    }
}

/// `(scheme, [(name, value)])` of a `WWW-Authenticate` value such as
/// `Bearer realm="https://...",service="...",scope="repository:a:pull,push"`
/// (values quoted or not; commas inside quotes kept).
pub fn parse_challenge(value: &str) -> Result<(String, Vec<(String, String)>)> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    ensure!(!scheme.is_empty(), "an empty WWW-Authenticate");
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut param = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => param.extend(chars.next()),
                    '"' => break,
                    c => param.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                param.push(c);
                chars.next();
            }
        }
        ensure!(
            !name.trim().is_empty(),
            "a WWW-Authenticate parameter without a name: {value}"
        );
        params.push((name.trim().to_string(), param.trim().to_string()));
    }
    Ok((scheme.to_string(), params))
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(url.len());
    &url[..end]
}

/// A redirect's `location` against the URL that was asked.
fn resolve(base: &str, location: &str) -> Result<String> {
    if location.starts_with("https://") || location.starts_with("http://") {
        Ok(location.to_string())
    } else if location.starts_with('/') {
        Ok(format!("{}{location}", origin(base)))
    } else {
        bail!("a relative redirect the client does not follow: {location}")
    }
}

/// The registry's TLS serving certificate and key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate (its chain, PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// How the registry authenticates.
#[derive(Debug, Clone)]
pub enum ServerAuth {
    /// Distribution's token auth (as ghcr.io): the client gets a JWT from
    /// `realm`, signed by a certificate chaining to `rootcertbundle`.
    Token {
        /// The token server's URL.
        realm: String,
        /// The `aud` the tokens name.
        service: String,
        /// The `iss` the tokens name.
        issuer: String,
        /// The CA bundle the tokens' signing certificates chain to.
        rootcertbundle: PathBuf,
    },
    /// An htpasswd file (bcrypt), Basic auth.
    Htpasswd {
        /// The file.
        path: PathBuf,
    },
}

/// How the test registry serves: plain HTTP and no auth by default.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Serve HTTPS with this certificate.
    pub tls: Option<TlsFiles>,
    /// Ask for auth.
    pub auth: Option<ServerAuth>,
}

/// The registry's configuration: `127.0.0.1:port`, storage under `dir`,
/// deletes off, no debug server; TLS and auth as `options` say.
pub fn config_yaml(dir: &Path, port: u16, options: &ServerOptions) -> String {
    let mut config = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("data").display()
    );
    if let Some(tls) = &options.tls {
        config.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            tls.cert.display(),
            tls.key.display()
        ));
    }
    match &options.auth {
        None => {}
        Some(ServerAuth::Token {
            realm,
            service,
            issuer,
            rootcertbundle,
        }) => config.push_str(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            rootcertbundle.display()
        )),
        Some(ServerAuth::Htpasswd { path }) => config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: klm-rig\n    path: {}\n",
            path.display()
        )),
    }
    config
}

/// Writes a plain-HTTP, no-auth config under `dir` and returns the
/// registry's command line (`docker-registry serve <config>`).
pub fn prepare(dir: &Path, port: u16) -> Result<(PathBuf, Vec<String>)> {
    prepare_with(dir, port, &ServerOptions::default())
}

/// [`prepare`] with TLS and auth as `options` say.
pub fn prepare_with(
    dir: &Path,
    port: u16,
    options: &ServerOptions,
) -> Result<(PathBuf, Vec<String>)> {
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("config.yml");
    std::fs::write(&config, config_yaml(dir, port, options))?;
    Ok((
        PathBuf::from(REGISTRY_BINARY),
        vec!["serve".into(), config.display().to_string()],
    ))
}

/// Waits until the plain-HTTP registry on `host` (`127.0.0.1:port`) answers.
pub fn wait_ready(host: &str, timeout: Duration) -> Result<()> {
    Registry::loopback(host)?.wait_ready(timeout)
}

/// containerd's `hosts.toml` for a plain-HTTP registry at `host`, in
/// `<certs_d>/<host>/hosts.toml` (containerd's `config_path`).
pub fn write_containerd_hosts(certs_d: &Path, host: &str) -> Result<()> {
    let dir = certs_d.join(host);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )?;
    Ok(())
}

/// An image index in a registry, read the way a client pulls it.
#[derive(Debug, Clone)]
pub struct RegistryImage {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The repository (`kata-lifecycle-manager`, `owner/kata-lifecycle-manager`).
    pub repository: String,
    /// The tag or digest the index is read by.
    pub reference: String,
}

impl BlobSource for RegistryImage {
    fn index_digest(&self) -> Result<String> {
        let index = self.fetch(&self.reference, INDEX_MEDIA_TYPE)?;
        Ok(format!("sha256:{}", sha256_hex(&index)))
    }

    fn fetch(&self, digest: &str, media_type: &str) -> Result<Vec<u8>> {
        let kind = if media_type == INDEX_MEDIA_TYPE || media_type == MANIFEST_MEDIA_TYPE {
            "manifests"
        } else {
            "blobs"
        };
        let response = self.registry.request(
            "GET",
            &format!("/v2/{}/{kind}/{digest}", self.repository),
            &[("accept", media_type)],
            None,
            &repository_scope(&self.repository, false),
        )?;
        ensure!(
            response.status == 200,
            "GET {}/{}/{kind}/{digest}: HTTP {}: {}",
            self.registry.host,
            self.repository,
            response.status,
            response.text()
        );
        if kind == "manifests" {
            let content_type = response.header("content-type");
            ensure!(
                content_type == Some(media_type),
                "{digest} served as {content_type:?}, not {media_type}"
            );
        }
        Ok(response.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_commas_inside_quotes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/klm:pull,push""#,
        )
        .unwrap();
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            [
                ("realm".to_string(), "https://ghcr.io/token".to_string()),
                ("service".to_string(), "ghcr.io".to_string()),
                (
                    "scope".to_string(),
                    "repository:o/klm:pull,push".to_string()
                ),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="klm-rig""#).unwrap();
        assert_eq!((scheme.as_str(), params.len()), ("Basic", 1));
        let (_, params) = parse_challenge("Bearer realm=https://a/t, service=a").unwrap();
        assert_eq!(params[1], ("service".into(), "a".into()));
    }

    #[test]
    fn redirects_resolve_and_drop_auth_across_origins() {
        assert_eq!(origin("https://ghcr.io/v2/a/blobs/x"), "https://ghcr.io");
        assert_eq!(
            resolve("https://ghcr.io/v2/a", "/v2/b").unwrap(),
            "https://ghcr.io/v2/b"
        );
        assert_eq!(
            resolve("https://ghcr.io/v2/a", "https://cdn.example/x").unwrap(),
            "https://cdn.example/x"
        );
        assert!(resolve("https://ghcr.io/v2/a", "x").is_err());
    }

    #[test]
    fn credentials_never_show_their_password() {
        let credentials = Credentials::new("me", "s3cret");
        assert!(!format!("{credentials:?}").contains("s3cret"));
        let connection = Connection {
            credentials: Some(credentials),
            ..Connection::default()
        };
        assert!(!format!("{connection:?}").contains("s3cret"));
    }
}
