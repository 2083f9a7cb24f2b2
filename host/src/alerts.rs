//! Outgoing alerts: one signed JSON POST per mirror state change, to the URL in
//! config. Delivery runs on its own task, in order, so that a slow receiver
//! never holds up a run; a failed delivery is retried a few times, then logged.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::health::Change;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`, as GitHub signs.
pub const SIGNATURE_HEADER: &str = "x-mirrorhost-signature-256";
pub const EVENT: &str = "mirror.state_changed";
const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where alerts go and the secret that signs them.
#[derive(Clone)]
pub struct Target {
    pub url: url::Url,
    pub secret: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &crate::sync::remote::redact(self.url.as_str()))
            .finish_non_exhaustive()
    }
}

/// The sending side; a no-op when no alert URL is configured.
#[derive(Debug, Default)]
pub struct Alerts {
    queue: Option<mpsc::UnboundedSender<Change>>,
}

impl Alerts {
    /// Starts the delivery task. Needs a tokio runtime.
    pub fn start(target: Option<Target>) -> Self {
        let Some(target) = target else {
            return Self::default();
        };
        let (queue, changes) = mpsc::unbounded_channel();
        tokio::spawn(deliver(target, changes));
        Self { queue: Some(queue) }
    }

    pub fn send(&self, change: Change) {
        if let Some(queue) = &self.queue {
            // Closed only when the delivery task is gone, i.e. at shutdown.
            let _ = queue.send(change);
        }
    }
}

async fn deliver(target: Target, mut changes: mpsc::UnboundedReceiver<Change>) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the alert HTTP client; alerts are off");
            return;
        }
    };
    while let Some(change) = changes.recv().await {
        let body = payload(&change);
        let signature = sign(&target.secret, &body);
        for attempt in 1..=ATTEMPTS {
            let sent = client
                .post(target.url.clone())
                .header("content-type", "application/json")
                .header("x-mirrorhost-event", EVENT)
                .header(SIGNATURE_HEADER, &signature)
                .body(body.clone())
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            match sent {
                Ok(_) => break,
                Err(error) if attempt == ATTEMPTS => tracing::error!(
                    mirror_id = change.health.mirror_id,
                    error = %error.without_url(),
                    "alert not delivered"
                ),
                Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await,
            }
        }
    }
}

fn payload(change: &Change) -> Vec<u8> {
    json!({
        "event": EVENT,
        "mirror_id": change.health.mirror_id,
        "from": change.from,
        "to": change.to,
        "at": crate::clock::rfc3339(chrono::Utc::now().timestamp_millis()),
        "health": change.health,
    })
    .to_string()
    .into_bytes()
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
