//! The rows behind SQL's tables ([`aegis_sql::Source`]): the loop's windows and recent
//! logs, the ingest registry and latest samples, and the newest history from the store.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use aegis_ingest::{Ingest, LatestSamples};
use aegis_sql::{Error, HISTORY_ROWS, Source, Table};
use aegis_store::{ActionAuditQuery, DetectionStore, ExecutorStore, PredictionQuery, Store};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array,
};
use serde_json::{Map, Value};

use crate::healing::HealingLoop;

/// What fills the tables of one query.
#[derive(Debug, Clone)]
pub struct Tables {
    /// The loop (samples, logs); absent when the engine is off.
    pub healing: Option<Arc<HealingLoop>>,
    /// The ingest front (series, log streams); absent when ingest is off.
    pub ingest: Option<Ingest>,
    /// The latest sample of every series.
    pub latest: Arc<Mutex<LatestSamples>>,
    /// History.
    pub store: Store,
}

impl Source for Tables {
    fn batch(
        &self,
        table: Table,
    ) -> Pin<Box<dyn Future<Output = Result<RecordBatch, Error>> + Send + '_>> {
        Box::pin(async move {
            match table {
                Table::Samples => self.samples(),
                Table::Series => self.series(),
                Table::Logs => self.logs(),
                Table::Predictions => self.predictions().await,
                Table::Actions => self.actions().await,
            }
        })
    }
}

/// A store failure as SQL reports it: an outage is worth a retry, anything else is ours.
fn store_error(error: aegis_store::Error) -> Error {
    if error.is_unavailable() {
        Error::Unavailable("the database is unavailable; retry shortly".to_owned())
    } else {
        Error::internal(error)
    }
}

impl Tables {
    fn samples(&self) -> Result<RecordBatch, Error> {
        let (mut ns, mut wl, mut metric, mut ts, mut val) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Some(h) = &self.healing {
            h.for_each_sample(|e, m, t, v| {
                ns.push(e.namespace.clone());
                wl.push(e.workload.clone());
                metric.push(m.to_owned());
                ts.push(t);
                val.push(v);
            });
        }
        Table::Samples.batch(vec![
            strings(ns),
            strings(wl),
            strings(metric),
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(val)),
        ])
    }

    fn series(&self) -> Result<RecordBatch, Error> {
        let (mut ids, mut names, mut labels, mut ts, mut val) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Some(ingest) = &self.ingest {
            let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            let registry = ingest.registry().lock().unwrap_or_else(|p| p.into_inner());
            for id in 0..registry.len() as u32 {
                let Some(l) = registry.labels(id) else {
                    continue;
                };
                let (name, text) = labels_json(l);
                let last = latest.get(id);
                ids.push(id);
                names.push(name);
                labels.push(text);
                ts.push(last.map(|(t, _)| t));
                val.push(last.map(|(_, v)| v));
            }
        }
        Table::Series.batch(vec![
            Arc::new(UInt32Array::from(ids)),
            strings(names),
            strings(labels),
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(val)),
        ])
    }

    fn logs(&self) -> Result<RecordBatch, Error> {
        let (mut ts, mut stream, mut ns, mut wl, mut level, mut line) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        if let (Some(h), Some(ingest)) = (&self.healing, &self.ingest) {
            let streams = ingest.streams().lock().unwrap_or_else(|p| p.into_inner());
            h.for_each_log(|id, t_ns, l, lv| {
                let labels = streams.labels(id).unwrap_or(&[]);
                let owned: Vec<(String, String)> = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let entity = aegis_engine::resolve_entity(&owned);
                ts.push(t_ns / 1_000_000);
                stream.push(labels_json(labels).1);
                ns.push(entity.as_ref().map(|e| e.namespace.clone()));
                wl.push(entity.map(|e| e.workload));
                level.push(lv.map(str::to_owned));
                line.push(l.to_owned());
            });
        }
        Table::Logs.batch(vec![
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            strings(stream),
            opt_strings(ns),
            opt_strings(wl),
            opt_strings(level),
            strings(line),
        ])
    }

    async fn predictions(&self) -> Result<RecordBatch, Error> {
        let rows = self
            .store
            .predictions(&PredictionQuery {
                limit: HISTORY_ROWS,
                ..PredictionQuery::default()
            })
            .await
            .map_err(store_error)?;
        Table::Predictions.batch(vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.created_at.timestamp_millis()),
                )
                .with_timezone("UTC"),
            ),
            strings(rows.iter().map(|r| r.detector.clone()).collect()),
            strings(rows.iter().map(|r| r.entity.clone()).collect()),
            strings(rows.iter().map(|r| r.model_version.clone()).collect()),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.score))),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.is_anomaly)),
            )),
            opt_strings(rows.iter().map(|r| r.severity.clone()).collect()),
            opt_strings(rows.iter().map(|r| r.failure_type.clone()).collect()),
            opt_strings(rows.iter().map(|r| r.recommended_action.clone()).collect()),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.confidence))),
        ])
    }

    async fn actions(&self) -> Result<RecordBatch, Error> {
        let rows = self
            .store
            .list_action_audit(&ActionAuditQuery {
                limit: HISTORY_ROWS,
                ..ActionAuditQuery::default()
            })
            .await
            .map_err(store_error)?;
        Table::Actions.batch(vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.created_at.timestamp_millis()),
                )
                .with_timezone("UTC"),
            ),
            strings(rows.iter().map(|r| r.action_id.clone()).collect()),
            strings(rows.iter().map(|r| r.phase.clone()).collect()),
            strings(rows.iter().map(|r| r.action.clone()).collect()),
            strings(rows.iter().map(|r| r.namespace.clone()).collect()),
            strings(rows.iter().map(|r| r.target.clone()).collect()),
            strings(rows.iter().map(|r| r.status.clone()).collect()),
            opt_strings(rows.iter().map(|r| r.actor.clone()).collect()),
            opt_strings(rows.iter().map(|r| r.reason.clone()).collect()),
        ])
    }
}

fn strings(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn opt_strings(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn labels_json(labels: &[(Arc<str>, Arc<str>)]) -> (String, String) {
    let mut map = Map::new();
    let mut name = String::new();
    for (k, v) in labels {
        if &**k == "__name__" {
            name = v.to_string();
        }
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    (name, Value::Object(map).to_string())
}
