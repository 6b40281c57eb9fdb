//! Waiting by watching: every wait in klm is a watch with a deadline.
//!
//! [`watch_until`] keeps a reflector cache of the watched objects (a watcher
//! with backoff, so a dropped watch or an apiserver restart is resumed, not
//! fatal) and re-evaluates a check over the cached objects after every event.
//! The check says whether to keep waiting, stop with a result, or fail early
//! (a crash loop is certain long before the deadline).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::error::{Classify, ExitStatus};

/// How long a watch that has listed once keeps retrying 403s: a restarted
/// apiserver refuses requests until its RBAC caches are synced.
const FORBIDDEN_AFTER_LIST_GRACE: Duration = Duration::from_secs(30);

/// What a check decided after looking at the watched objects.
#[derive(Debug)]
pub enum Check<T> {
    /// Not there yet: keep watching.
    Pending,
    /// The condition holds: stop with this result.
    Done(T),
    /// The wait can no longer succeed: stop with this reason.
    Failed(String),
}

/// Why a wait ended without its condition.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed.
    #[error("timed out after {}s waiting for {what}", .after.as_secs())]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        after: Duration,
        /// The last thing the check saw, for the message.
        last_seen: Option<String>,
    },
    /// The check saw a state from which the condition cannot be reached.
    #[error("{what}: {reason}")]
    Failed {
        /// What was awaited.
        what: String,
        /// Why it cannot happen.
        reason: String,
    },
    /// The watch itself could not be established (RBAC, API gone).
    #[error("watching {what}")]
    Watch {
        /// What was awaited.
        what: String,
        /// The watcher error.
        #[source]
        source: watcher::Error,
    },
}

impl Classify for WaitError {
    fn status(&self) -> ExitStatus {
        match self {
            WaitError::Watch {
                source: watcher::Error::InitialListFailed(kube::Error::Api(s)),
                ..
            }
            | WaitError::Watch {
                source: watcher::Error::WatchStartFailed(kube::Error::Api(s)),
                ..
            } if s.is_forbidden() => ExitStatus::Precondition,
            _ => ExitStatus::Failed,
        }
    }
    fn hints(&self) -> Vec<String> {
        match self {
            WaitError::Timeout {
                last_seen: Some(seen),
                ..
            } => vec![format!("last seen: {seen}")],
            _ => Vec::new(),
        }
    }
}

/// Watches the objects `config` selects and calls `check` over the current
/// set after every change, until it returns [`Check::Done`] or
/// [`Check::Failed`], or `timeout` passes. `describe` renders the last state
/// for the timeout message.
pub async fn watch_until<K, T>(
    api: Api<K>,
    config: watcher::Config,
    timeout: Duration,
    what: impl Into<String>,
    mut check: impl FnMut(&[Arc<K>]) -> Check<T>,
) -> Result<T, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let what = what.into();
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    let mut stream = std::pin::pin!(stream);
    let mut last_seen: Option<String> = None;
    let mut listed = false;
    let mut forbidden_since: Option<tokio::time::Instant> = None;

    let waited = tokio::time::timeout(timeout, async {
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::InitDone) => {
                    listed = true;
                    forbidden_since = None;
                }
                Ok(Event::Init | Event::InitApply(_)) => continue,
                Ok(Event::Apply(_) | Event::Delete(_)) => forbidden_since = None,
                Err(source) => {
                    // A permission error on the first list will not heal by
                    // retrying. Once the watch has listed, the permission is
                    // proven: a 403 then comes from an apiserver that restarted
                    // and has not yet synced its RBAC caches, and heals within
                    // seconds. The backoff handles everything else.
                    if is_forbidden(&source) {
                        let since = *forbidden_since.get_or_insert_with(tokio::time::Instant::now);
                        if !listed || since.elapsed() > FORBIDDEN_AFTER_LIST_GRACE {
                            return Err(WaitError::Watch {
                                what: what.clone(),
                                source,
                            });
                        }
                        tracing::info!(error = %source, "watch refused after it had listed (an apiserver restarting?); resuming");
                        continue;
                    }
                    tracing::debug!(error = %source, "watch interrupted; resuming");
                    continue;
                }
            }
            if !listed {
                continue;
            }
            match evaluate(&reader, &mut check, &mut last_seen) {
                Check::Pending => {}
                Check::Done(result) => return Ok(result),
                Check::Failed(reason) => {
                    return Err(WaitError::Failed {
                        what: what.clone(),
                        reason,
                    });
                }
            }
        }
        Err(WaitError::Failed {
            what: what.clone(),
            reason: "the watch ended unexpectedly".into(),
        })
    })
    .await;

    match waited {
        Ok(result) => result,
        Err(_elapsed) => Err(WaitError::Timeout {
            what,
            after: timeout,
            last_seen,
        }),
    }
}

fn evaluate<K, T>(
    reader: &Store<K>,
    check: &mut impl FnMut(&[Arc<K>]) -> Check<T>,
    last_seen: &mut Option<String>,
) -> Check<T>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let objects = reader.state();
    let verdict = check(&objects);
    *last_seen = Some(match objects.len() {
        0 => "no matching object".to_string(),
        1 => format!(
            "1 object ({})",
            objects[0].meta().name.clone().unwrap_or_default()
        ),
        n => format!("{n} objects"),
    });
    verdict
}

fn is_forbidden(err: &watcher::Error) -> bool {
    matches!(
        err,
        watcher::Error::InitialListFailed(kube::Error::Api(s)) | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            if s.is_forbidden()
    )
}

/// A watcher config selecting one object by name.
pub fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}
