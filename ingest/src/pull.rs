//! Pull mode, for setups that cannot push: poll Prometheus and Loki `query_range` on an
//! interval with configured queries, and feed what comes back into ingest. Each poll asks
//! for the window since the previous one, so nothing is read twice and a slow poll catches
//! up.

use std::time::Duration;

use crate::Ingest;
use aegis_core::metric_names;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;

use aegis_core::http_client::Https;
use serde::Deserialize;

/// What to poll.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// Prometheus base URL and PromQL queries.
    pub prometheus: Option<(String, Vec<String>)>,
    /// Loki base URL and LogQL queries.
    pub loki: Option<(String, Vec<String>)>,
    /// Poll interval (and Prometheus step).
    pub interval: Duration,
}

#[derive(Deserialize)]
struct PromResponse {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<PromData>,
}

#[derive(Deserialize)]
struct PromData {
    #[serde(default)]
    result: Vec<PromSeries>,
}

#[derive(Deserialize)]
struct PromSeries {
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

#[derive(Deserialize)]
struct LokiResponse {
    data: LokiData,
}

#[derive(Deserialize)]
struct LokiData {
    #[serde(default)]
    result: Vec<serde_json::Value>,
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The poller.
pub struct Puller {
    settings: PullSettings,
    ingest: Ingest,
    client: Client<Https, Empty<Bytes>>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Puller {
    /// A poller feeding `ingest`.
    pub fn new(settings: PullSettings, ingest: Ingest) -> Result<Self, crate::IngestError> {
        Ok(Self {
            settings,
            ingest,
            client: aegis_core::http_client::client()
                .map_err(|e| crate::IngestError::Pull(e.to_string()))?,
        })
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, crate::IngestError> {
        let request = http::Request::get(url)
            .body(Empty::new())
            .map_err(|e| crate::IngestError::Pull(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| crate::IngestError::Pull(format!("{url}: no answer within 30 s")))?
            .map_err(|e| crate::IngestError::Pull(format!("{url}: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| crate::IngestError::Pull(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(crate::IngestError::Pull(format!(
                "{url}: {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        Ok(body.to_vec())
    }

    /// Polls every query once for the window `[start_ms, end_ms)`; returns samples and lines.
    pub async fn poll_once(
        &self,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(u64, u64), crate::IngestError> {
        let (mut samples, mut lines) = (0, 0);
        if let Some((base, queries)) = &self.settings.prometheus {
            let step = self.settings.interval.as_secs().max(1);
            for q in queries {
                let url = format!(
                    "{}/api/v1/query_range?query={}&start={:.3}&end={:.3}&step={step}",
                    base.trim_end_matches('/'),
                    encode(q),
                    start_ms as f64 / 1000.0,
                    (end_ms - 1) as f64 / 1000.0
                );
                let body: PromResponse = serde_json::from_slice(&self.get(&url).await?)
                    .map_err(|e| crate::IngestError::Pull(format!("{url}: {e}")))?;
                if body.status != "success" {
                    return Err(crate::IngestError::Pull(format!(
                        "{url}: {}",
                        body.error.unwrap_or(body.status)
                    )));
                }
                let series = body
                    .data
                    .map(|d| d.result)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| {
                        let points = s
                            .values
                            .into_iter()
                            .filter_map(|(t, v)| {
                                v.parse::<f64>()
                                    .ok()
                                    .map(|v| ((t * 1000.0).round() as i64, v))
                            })
                            .collect();
                        (s.metric.into_iter().collect(), points)
                    })
                    .collect();
                let n = self
                    .ingest
                    .pulled_samples(series)
                    .await
                    .map_err(|e| crate::IngestError::Pull(e.to_string()))?;
                metrics::counter!(metric_names::INGEST_SAMPLES_TOTAL, "source" => "prometheus_pull").increment(n);
                samples += n;
            }
        }
        if let Some((base, queries)) = &self.settings.loki {
            for q in queries {
                let url = format!(
                    "{}/loki/api/v1/query_range?query={}&start={}&end={}&direction=forward&limit=5000",
                    base.trim_end_matches('/'),
                    encode(q),
                    start_ms as i128 * 1_000_000,
                    end_ms as i128 * 1_000_000
                );
                let body: LokiResponse = serde_json::from_slice(&self.get(&url).await?)
                    .map_err(|e| crate::IngestError::Pull(format!("{url}: {e}")))?;
                let push = serde_json::json!({"streams": body.data.result}).to_string();
                let n = self
                    .ingest
                    .pulled_logs(push.as_bytes())
                    .await
                    .map_err(|e| crate::IngestError::Pull(e.to_string()))?;
                metrics::counter!(metric_names::INGEST_LOG_LINES_TOTAL, "source" => "loki_pull")
                    .increment(n);
                lines += n;
            }
        }
        Ok((samples, lines))
    }

    /// Polls on the interval until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let interval_ms = self.settings.interval.as_millis() as i64;
        let mut start = chrono::Utc::now().timestamp_millis() - interval_ms;
        loop {
            let end = chrono::Utc::now().timestamp_millis();
            match self.poll_once(start, end).await {
                Ok(_) => start = end,
                // The window stays: the next poll asks again from the same start.
                Err(error) => {
                    tracing::warn!(%error, "pull mode: a poll failed; retrying next interval")
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }
}
