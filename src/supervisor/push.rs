//! Asks a node to reconcile now, so a committed move takes effect in seconds
//! instead of at the node's next one-minute cron. The node answers only when its
//! reconcile is done, so the caller sizes the timeout to the work; one push per
//! node at a time is the caller's business (`supervisor::pushes`).

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Nothing listens: no reconcile of ours runs there.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("refused with status {0}")]
    Status(u16),
    #[error("{0}")]
    Request(String),
    /// Not sent: the lease could not be renewed first.
    #[error("not sent: {0}")]
    Lease(String),
}

pub struct ReconcilePush {
    client: awc::Client,
    auth_header: Option<String>,
}

impl ReconcilePush {
    pub fn new(auth_header: Option<String>) -> Self {
        let client = awc::Client::builder().disable_redirects().finish();
        ReconcilePush { client, auth_header }
    }

    /// `POST http://<host>/api/v1/reconcile-monitors`, waiting up to `timeout`
    /// for the node's answer.
    pub fn send(&self, host: &str, timeout: Duration) -> impl std::future::Future<Output = Result<(), PushError>> + 'static {
        let mut request = self.client.post(format!("http://{host}/api/v1/reconcile-monitors")).timeout(timeout);
        if let Some(auth) = &self.auth_header {
            request = request.insert_header(("authorization", auth.as_str()));
        }
        async move {
            match request.send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(PushError::Status(response.status().as_u16())),
                Err(awc::error::SendRequestError::Connect(error)) => Err(PushError::Unreachable(error.to_string())),
                Err(error) => Err(PushError::Request(error.to_string())),
            }
        }
    }
}
