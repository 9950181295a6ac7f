//! Health probes. The NodeActor only sees the [`Probe`] trait, so tests script
//! the results; [`HttpProbe`] is the real one.

use chrono::{DateTime, Utc};
use futures_util::future::LocalBoxFuture;
use std::time::Duration;

/// The largest health answer read for its timestamp.
const MAX_HEALTH_BODY: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("node has no host")]
    NoHost,
    #[error("timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("status {0}")]
    Status(u16),
    #[error("request failed: {0}")]
    Request(String),
}

impl ProbeError {
    /// A timeout is weak evidence: the node may only be busy.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProbeError::Timeout)
    }
}

/// A healthy answer, with the node's clock when the answer names it (Kuma's
/// `timestamp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Healthy {
    pub node_time: Option<DateTime<Utc>>,
}

/// Checks one node once. Implementations need not enforce the timeout: the
/// NodeActor wraps every call in one.
pub trait Probe {
    fn check(&self, host: &str, path: &str) -> LocalBoxFuture<'static, Result<Healthy, ProbeError>>;
}

/// `GET http://<host><path>`; only a 200 is healthy. Redirects are not followed.
pub struct HttpProbe {
    client: awc::Client,
}

impl HttpProbe {
    /// `longest`: the most a probe may take in all, a late answer included
    /// (`health.late_answer_wait`); the NodeActor judges at `health.timeout`.
    pub fn new(longest: Duration) -> Self {
        let client = awc::Client::builder()
            .timeout(longest)
            .disable_redirects()
            .no_default_headers()
            .add_default_header(("user-agent", concat!("kuma-cluster/", env!("CARGO_PKG_VERSION"))))
            .finish();
        HttpProbe { client }
    }
}

impl Probe for HttpProbe {
    fn check(&self, host: &str, path: &str) -> LocalBoxFuture<'static, Result<Healthy, ProbeError>> {
        let request = self.client.get(format!("http://{host}{path}"));
        Box::pin(async move {
            let mut response = request.send().await.map_err(|e| match e {
                awc::error::SendRequestError::Connect(c) => ProbeError::Connect(c.to_string()),
                awc::error::SendRequestError::Timeout => ProbeError::Timeout,
                other => ProbeError::Request(other.to_string()),
            })?;
            match response.status().as_u16() {
                200 => {
                    // the verdict is the status; the clock is a bonus when the body gives one
                    let body = response.body().limit(MAX_HEALTH_BODY).await.unwrap_or_default();
                    Ok(Healthy { node_time: node_time(&body) })
                }
                code => Err(ProbeError::Status(code)),
            }
        })
    }
}

/// Kuma's health answer names the node's clock as `timestamp` (RFC 3339).
fn node_time(body: &[u8]) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Answer {
        timestamp: DateTime<Utc>,
    }
    serde_json::from_slice::<Answer>(body).ok().map(|a| a.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_clock_is_read_from_its_health_answer() {
        let body = br#"{"ok":true,"status":"healthy","timestamp":"2026-11-27T13:00:05.250Z","uptime":3.2}"#;
        assert_eq!(node_time(body).map(|t| t.timestamp_millis()), Some(1_795_784_405_250));
        assert_eq!(node_time(b"{}"), None);
        assert_eq!(node_time(b"not json"), None);
    }
}
