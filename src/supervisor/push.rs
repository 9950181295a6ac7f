//! Asks a node to reconcile its running set now, so a committed move takes effect
//! in seconds instead of at the node's next one-minute cron. Best effort: a failed
//! push is logged, and the node's own cron still catches up.

use std::time::Duration;

pub struct ReconcilePush {
    client: awc::Client,
    auth_header: Option<String>,
}

impl ReconcilePush {
    pub fn new(auth_header: Option<String>, timeout: Duration) -> Self {
        let client = awc::Client::builder().timeout(timeout).disable_redirects().finish();
        ReconcilePush { client, auth_header }
    }

    /// Sends `POST http://<host>/api/v1/reconcile-monitors` in the background.
    pub fn push(&self, node_id: String, host: String) {
        let mut request = self.client.post(format!("http://{host}/api/v1/reconcile-monitors"));
        if let Some(auth) = &self.auth_header {
            request = request.insert_header(("authorization", auth.as_str()));
        }
        actix_rt::spawn(async move {
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::debug!(node_id = %node_id, "node asked to reconcile");
                }
                Ok(response) => {
                    tracing::warn!(node_id = %node_id, status = response.status().as_u16(), "reconcile push refused");
                }
                Err(error) => {
                    tracing::warn!(node_id = %node_id, error = %error, "reconcile push failed");
                }
            }
        });
    }
}
