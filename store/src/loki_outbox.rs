//! Pushes the audit outbox to Loki (`AEGIS_LOKI_URL`): each action audit row becomes one JSON
//! log line in the stream `{service="aegis", audit="action_audit_logs"}`. A failed push is
//! retried with growing delays; rows stay in the outbox until Loki accepts them.

use std::time::Duration;

use crate::{Error, Outbox, Store};
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;

use aegis_core::http_client::Https;
use serde_json::json;

/// Rows per push.
const BATCH: i64 = 500;
/// How often the outbox is looked at.
const POLL: Duration = Duration::from_secs(1);

/// The pusher.
pub struct LokiPusher {
    store: Store,
    push_url: String,
    client: Client<Https, Full<Bytes>>,
}

impl std::fmt::Debug for LokiPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LokiPusher")
            .field("push_url", &self.push_url)
            .finish()
    }
}

/// When a row that failed `attempts` times is tried next: 1 s, 2 s, 4 s, ... at most 5 min.
fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 8)).min(Duration::from_secs(300))
}

impl LokiPusher {
    /// A pusher to the Loki at `base_url` (`http(s)://HOST:3100`).
    pub fn new(store: Store, base_url: &str) -> Result<Self, Error> {
        Ok(Self {
            store,
            push_url: format!("{}/loki/api/v1/push", base_url.trim_end_matches('/')),
            client: aegis_core::http_client::client()
                .map_err(|e| Error::Delivery(e.to_string()))?,
        })
    }

    /// Pushes one batch of due rows; returns how many were delivered.
    pub async fn push_once(&self) -> Result<usize, Error> {
        let rows = self.store.outbox_due(BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let values: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let ns = r.created_at.timestamp_nanos_opt().unwrap_or_default();
                json!([ns.to_string(), r.line])
            })
            .collect();
        let body = json!({"streams": [{"stream": {"service": "aegis", "audit": "action_audit_logs"}, "values": values}]});
        let request = http::Request::post(&self.push_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Error::Delivery(e.to_string()))?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let outcome =
            match tokio::time::timeout(Duration::from_secs(10), self.client.request(request)).await
            {
                Ok(Ok(response)) if response.status().is_success() => Ok(()),
                Ok(Ok(response)) => {
                    let status = response.status();
                    let text = response
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Err(Error::Delivery(format!(
                        "Loki answered {status}: {}",
                        String::from_utf8_lossy(&text).trim()
                    )))
                }
                Ok(Err(e)) => Err(Error::Delivery(format!("cannot reach Loki: {e}"))),
                Err(_) => Err(Error::Delivery("Loki did not answer within 10s".to_owned())),
            };
        match outcome {
            Ok(()) => {
                self.store.outbox_sent(&ids).await?;
                Ok(ids.len())
            }
            Err(error) => {
                let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
                let next =
                    Utc::now() + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default();
                self.store.outbox_retry(&ids, next).await?;
                Err(error)
            }
        }
    }

    /// Pushes until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            match self.push_once().await {
                // A full batch: there may be more right away.
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "pushing audit rows to Loki failed; they stay queued")
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use crate::testing::TestDb;
    use crate::{AuditLog, NewActionAudit};
    use axum::http::StatusCode;

    use super::*;

    fn row(n: usize) -> NewActionAudit {
        NewActionAudit {
            created_at: None,
            action_id: format!("a{n}"),
            phase: "intent".into(),
            action: "restart_pod".into(),
            namespace: "production".into(),
            target: "api".into(),
            status: "pending".into(),
            actor: None,
            reason: None,
            details: json!({}),
        }
    }

    #[tokio::test]
    async fn rows_reach_loki_after_it_recovers() {
        for db in TestDb::both().await {
            // A Loki that fails its first two pushes.
            let received: Arc<Mutex<(u32, Vec<serde_json::Value>)>> = Arc::default();
            let seen = received.clone();
            let app = axum::Router::new().route(
                "/loki/api/v1/push",
                axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                    let seen = seen.clone();
                    async move {
                        let mut s = seen.lock().unwrap();
                        s.0 += 1;
                        if s.0 <= 2 {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        s.1.push(body);
                        StatusCode::NO_CONTENT
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

            let store = db.store.clone().with_audit_outbox();
            store
                .append_action_audit(&(0..3).map(row).collect::<Vec<_>>())
                .await
                .unwrap();
            // Policy decisions are not pushed, only the action audit.
            assert_eq!(store.outbox_pending().await.unwrap(), 3, "{}", db.name());
            let pusher = LokiPusher::new(store.clone(), &url).unwrap();
            assert!(pusher.push_once().await.is_err());
            assert_eq!(
                pusher.push_once().await,
                Ok(0),
                "not due again before the backoff"
            );
            // Make the rows due now instead of waiting out the backoff.
            store.outbox_retry(&[1, 2, 3], Utc::now()).await.unwrap();
            assert!(pusher.push_once().await.is_err());
            store.outbox_retry(&[1, 2, 3], Utc::now()).await.unwrap();
            assert_eq!(pusher.push_once().await, Ok(3));
            assert_eq!(store.outbox_pending().await.unwrap(), 0);
            let pushed = received.lock().unwrap().1.clone();
            let values = pushed[0]["streams"][0]["values"].as_array().unwrap();
            assert_eq!(values.len(), 3);
            let line: serde_json::Value =
                serde_json::from_str(values[0][1].as_str().unwrap()).unwrap();
            assert_eq!(
                (line["table"].as_str(), line["id"].as_i64()),
                (Some("action_audit_logs"), Some(1))
            );
            assert_eq!(line["hash"].as_str().map(str::len), Some(64));
            db.cleanup().await;
        }
    }
}
