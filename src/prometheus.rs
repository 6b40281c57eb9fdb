//! Asking Prometheus what a query returns: its HTTP API's instant query
//! (`GET /api/v1/query?query=…&time=…`), over plain HTTP or HTTPS (the
//! system's roots plus an optional CA file), with an optional bearer token,
//! through the HTTP client kube itself is built on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

/// How one query may take at most.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How klm proves who it is to Prometheus, and whom it trusts: files, so
/// that the workflow mounts them from a Secret and nothing is recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A file holding a bearer token (a mounted Secret's key), if any.
    pub token_file: Option<PathBuf>,
    /// A PEM file of CA certificates trusted besides the system's, if any.
    pub ca_file: Option<PathBuf>,
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// The URL cannot be used.
    #[error("--prometheus-url {url:?} is not an http:// or https:// URL: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A token or CA file cannot be read.
    #[error("reading {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// Prometheus refused the query itself (`bad_data`: a syntax error).
    #[error("Prometheus refused the query ({kind}): {message}")]
    Refused {
        /// Prometheus's errorType.
        kind: String,
        /// Its error.
        message: String,
    },
    /// No answer: Prometheus unreachable, an HTTP error, a timeout.
    #[error("no answer from Prometheus at {url}: {why}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        why: String,
    },
}

impl PrometheusError {
    /// Whether the query itself is wrong (bad input), not Prometheus's state.
    pub fn is_bad_query(&self) -> bool {
        matches!(self, PrometheusError::Refused { kind, .. } if kind == "bad_data")
    }
}

/// What an instant query returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A scalar.
    Scalar(f64),
    /// An instant vector: one value per series.
    Vector(Vec<Series>),
    /// Anything else (a string, a range vector).
    Other(String),
}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl std::fmt::Display for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        write!(f, "{{{}}} {}", labels.join(","), self.value)
    }
}

/// A Prometheus to ask.
#[derive(Clone)]
pub struct Prometheus {
    base: String,
    token: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Prometheus {
    /// A client for the Prometheus at `url` (reads the credentials' files now).
    pub fn connect(url: &str, connection: &Credentials) -> Result<Prometheus, PrometheusError> {
        let base = url.trim_end_matches('/').to_string();
        let bad = |why: &str| PrometheusError::BadUrl {
            url: url.to_string(),
            why: why.into(),
        };
        let uri: http::Uri = base
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("it needs a scheme (http or https) and a host"));
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| PrometheusError::File {
                path: path.display().to_string(),
                why: e.to_string(),
            })
        };
        let token = match &connection.token_file {
            Some(path) => Some(String::from_utf8_lossy(&read(path)?).trim().to_string()),
            None => None,
        };
        // The system's trusted roots, loaded as kube's own client loads them.
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            roots.add(cert).ok();
        }
        if let Some(path) = &connection.ca_file {
            let pem = read(path)?;
            let file_error = |why: String| PrometheusError::File {
                path: path.display().to_string(),
                why,
            };
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| file_error(e.to_string()))?;
                roots.add(cert).map_err(|e| file_error(e.to_string()))?;
                added += 1;
            }
            if added == 0 {
                return Err(file_error("no PEM certificate in it".into()));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Prometheus {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// What `query` returned at `at`.
    pub async fn query_at(
        &self,
        query: &str,
        at: jiff::Timestamp,
    ) -> Result<Answer, PrometheusError> {
        let params = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .append_pair(
                "time",
                &format!("{:.3}", at.as_millisecond() as f64 / 1000.0),
            )
            .finish();
        let url = format!("{}/api/v1/query?{params}", self.base);
        let unreachable = |why: String| PrometheusError::Unreachable {
            url: self.base.clone(),
            why,
        };
        let mut request = http::Request::get(&url);
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(QUERY_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {QUERY_TIMEOUT:?}")))?
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        match parsed {
            Some(json) => parse_answer(&json).map_err(|e| match e {
                PrometheusError::Unreachable { why, .. } => {
                    unreachable(format!("HTTP {status}: {why}"))
                }
                other => other,
            }),
            None => Err(unreachable(format!(
                "HTTP {status}, not Prometheus's JSON: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))),
        }
    }
}

/// Prometheus's JSON answer to an instant query.
fn parse_answer(json: &Value) -> Result<Answer, PrometheusError> {
    if json["status"] != "success" {
        let kind = json["errorType"].as_str().unwrap_or("error").to_string();
        let message = json["error"].as_str().unwrap_or("").to_string();
        return Err(match kind.as_str() {
            "bad_data" | "execution" => PrometheusError::Refused { kind, message },
            _ => PrometheusError::Unreachable {
                url: String::new(),
                why: format!("{kind}: {message}"),
            },
        });
    }
    let data = &json["data"];
    let value_of = |pair: &Value| -> f64 {
        pair[1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    Ok(match data["resultType"].as_str() {
        Some("scalar") => Answer::Scalar(value_of(&data["result"])),
        Some("vector") => Answer::Vector(
            data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Series {
                    labels: s["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect(),
                    value: value_of(&s["value"]),
                })
                .collect(),
        ),
        other => Answer::Other(other.unwrap_or("nothing").to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_vectors_and_errors_are_read_as_prometheus_writes_them() {
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1765100000.0, "1"]}});
        assert_eq!(parse_answer(&scalar).unwrap(), Answer::Scalar(1.0));
        let vector = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"node": "kata-2"}, "value": [1765100000.0, "3"]}
        ]}});
        let Answer::Vector(series) = parse_answer(&vector).unwrap() else {
            panic!("a vector")
        };
        assert_eq!(series[0].to_string(), r#"{node="kata-2"} 3"#);
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(parse_answer(&empty).unwrap(), Answer::Vector(Vec::new()));
        let bad =
            json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 4"});
        assert!(parse_answer(&bad).unwrap_err().is_bad_query());
        let unavailable = json!({"status": "error", "errorType": "unavailable", "error": "down"});
        assert!(!parse_answer(&unavailable).unwrap_err().is_bad_query());
    }

    #[test]
    fn a_url_without_a_scheme_or_host_is_refused() {
        for url in ["prometheus:9090", "ftp://p:9090", "http://"] {
            assert!(
                matches!(
                    Prometheus::connect(url, &Credentials::default()),
                    Err(PrometheusError::BadUrl { .. })
                ),
                "{url}"
            );
        }
    }
}
