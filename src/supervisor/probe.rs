//! Health probes. The NodeActor only sees the [`Probe`] trait, so tests script
//! the results; [`HttpProbe`] is the real one.

use futures_util::future::LocalBoxFuture;
use std::time::Duration;

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

/// Checks one node once. Implementations need not enforce the timeout: the
/// NodeActor wraps every call in one.
pub trait Probe {
    fn check(&self, host: &str, path: &str) -> LocalBoxFuture<'static, Result<(), ProbeError>>;
}

/// `GET http://<host><path>`; only a 200 is healthy. Redirects are not followed.
pub struct HttpProbe {
    client: awc::Client,
}

impl HttpProbe {
    pub fn new(timeout: Duration) -> Self {
        let client = awc::Client::builder()
            .timeout(timeout)
            .disable_redirects()
            .no_default_headers()
            .add_default_header(("user-agent", concat!("kuma-cluster/", env!("CARGO_PKG_VERSION"))))
            .finish();
        HttpProbe { client }
    }
}

impl Probe for HttpProbe {
    fn check(&self, host: &str, path: &str) -> LocalBoxFuture<'static, Result<(), ProbeError>> {
        let request = self.client.get(format!("http://{host}{path}"));
        Box::pin(async move {
            let response = request.send().await.map_err(|e| match e {
                awc::error::SendRequestError::Connect(c) => ProbeError::Connect(c.to_string()),
                awc::error::SendRequestError::Timeout => ProbeError::Timeout,
                other => ProbeError::Request(other.to_string()),
            })?;
            match response.status().as_u16() {
                200 => Ok(()),
                code => Err(ProbeError::Status(code)),
            }
        })
    }
}
