//! Detector history: predictions, per-class model figures, labelled training rows and
//! fitted models.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;
use crate::page::Page;
use crate::store::Store;

/// A prediction to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrediction {
    /// `isolation_forest` or `failure_classifier`.
    pub detector: String,
    /// The workload (`namespace/deployment`), or what the caller named.
    pub entity: String,
    /// Version of the model that answered.
    pub model_version: String,
    /// Anomaly score, or the failure type's probability.
    pub score: f64,
    /// Above the threshold / a failure other than `none`.
    pub is_anomaly: bool,
    /// `low` … `critical`.
    pub severity: String,
    /// Failure type, for the classifier.
    pub failure_type: Option<String>,
    /// Recommended action.
    pub recommended_action: String,
    /// Confidence of the recommendation.
    pub confidence: f64,
    /// Inference time.
    pub latency_us: i64,
    /// The input features as JSON.
    pub features: String,
    /// The full answer as JSON.
    pub details: String,
}

/// A recorded prediction.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PredictionRow {
    /// Row id (the cursor).
    pub id: i64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Detector.
    pub detector: String,
    /// Workload.
    pub entity: String,
    /// Model version.
    pub model_version: String,
    /// Score.
    pub score: f64,
    /// Flagged.
    pub is_anomaly: bool,
    /// Severity.
    pub severity: Option<String>,
    /// Failure type.
    pub failure_type: Option<String>,
    /// Recommended action.
    pub recommended_action: Option<String>,
    /// Confidence.
    pub confidence: Option<f64>,
    /// Inference time in microseconds.
    pub latency_us: i64,
    /// The input features as JSON text.
    pub features: String,
    /// The full answer as JSON text.
    pub explanation: Option<String>,
}

/// Filters of the prediction history.
#[derive(Debug, Clone, Default)]
pub struct PredictionQuery {
    /// Only this detector.
    pub detector: Option<String>,
    /// Only this workload.
    pub entity: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only flagged (or only unflagged) rows.
    pub is_anomaly: Option<bool>,
    /// Made at or after.
    pub from: Option<DateTime<Utc>>,
    /// Made before.
    pub to: Option<DateTime<Utc>>,
    /// Ids below this (the cursor).
    pub before_id: Option<i64>,
    /// At most this many rows.
    pub limit: i64,
}

/// Counts per detector.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DetectionStats {
    /// Detector.
    pub detector: String,
    /// Predictions.
    pub predictions: i64,
    /// Of which flagged.
    pub anomalies: i64,
    /// Mean inference time in microseconds.
    pub mean_latency_us: f64,
}

/// One class's figures of one training.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ModelMetricRow {
    /// Model version.
    pub model_version: String,
    /// When it was trained.
    pub created_at: DateTime<Utc>,
    /// Class name.
    pub class: String,
    /// Precision on the held-out split.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Held-out rows of the class.
    pub support: i64,
    /// Out-of-bag accuracy of the forest.
    pub oob_accuracy: Option<f64>,
}

/// A labelled training row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TrainingRow {
    /// Failure type.
    pub label: String,
    /// Feature values as a JSON array, in schema order.
    pub features: String,
    /// Where it came from (`api`, `bundled`, …).
    pub source: String,
    /// The workload, when known.
    pub entity: Option<String>,
}

/// A stored model file.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ModelRow {
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// When fitted.
    pub created_at: DateTime<Utc>,
    /// Rows fitted on.
    pub training_rows: i64,
    /// The model file (JSON).
    pub body: String,
}

/// One stored measure: when, class, measure, value, support.
type MetricCell = (DateTime<Utc>, Option<String>, String, f64, Option<i64>);

/// Reading and writing detector history.
pub trait DetectionStore {
    /// Records predictions in one transaction; returns their ids in order.
    fn insert_predictions(
        &self,
        rows: &[NewPrediction],
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;
    /// Newest-first page of predictions.
    fn predictions(
        &self,
        q: &PredictionQuery,
    ) -> impl Future<Output = Result<Vec<PredictionRow>>> + Send;
    /// Counts per detector since `since`.
    fn detection_stats(
        &self,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<DetectionStats>>> + Send;
    /// Records one training's per-class figures.
    fn insert_model_metrics(
        &self,
        rows: &[ModelMetricRow],
    ) -> impl Future<Output = Result<()>> + Send;
    /// The figures of one model version.
    fn model_metrics(
        &self,
        version: &str,
    ) -> impl Future<Output = Result<Vec<ModelMetricRow>>> + Send;
    /// Adds labelled rows.
    fn insert_training_rows(&self, rows: &[TrainingRow])
    -> impl Future<Output = Result<()>> + Send;
    /// Every labelled row, oldest first.
    fn training_rows(&self) -> impl Future<Output = Result<Vec<TrainingRow>>> + Send;
    /// Stores a model file (a version is written once).
    fn save_model(&self, row: &ModelRow) -> impl Future<Output = Result<()>> + Send;
    /// The newest model of a kind.
    fn latest_model(&self, kind: &str) -> impl Future<Output = Result<Option<ModelRow>>> + Send;
}

impl DetectionStore for Store {
    async fn insert_predictions(&self, rows: &[NewPrediction]) -> Result<Vec<i64>> {
        const SQL: &str = "INSERT INTO prediction_history (created_at, detector, entity, model_version, score, \
            is_anomaly, severity, failure_type, recommended_action, confidence, latency_us, features, explanation) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id";
        let now = Utc::now();
        let ids = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut ids = Vec::with_capacity(rows.len());
            for r in rows {
                let id: i64 = sqlx::query_scalar(SQL)
                    .bind(now).bind(&r.detector).bind(&r.entity).bind(&r.model_version).bind(r.score)
                    .bind(r.is_anomaly).bind(&r.severity).bind(&r.failure_type).bind(&r.recommended_action)
                    .bind(r.confidence).bind(r.latency_us).bind(&r.features).bind(&r.details)
                    .fetch_one(&mut *tx).await?;
                ids.push(id);
            }
            tx.commit().await?;
            ids
        });
        Ok(ids)
    }

    async fn predictions(&self, q: &PredictionQuery) -> Result<Vec<PredictionRow>> {
        let page = Page::new(
            "SELECT id, created_at, detector, entity, model_version, score, is_anomaly, severity, \
             failure_type, recommended_action, confidence, latency_us, features, explanation FROM prediction_history",
        )
        .eq("detector", q.detector.as_ref())
        .eq("entity", q.entity.as_ref())
        .eq("severity", q.severity.as_ref())
        .flag("is_anomaly", q.is_anomaly)
        .window(q.from, q.to, q.before_id, q.limit);
        self.fetch_page(&page).await
    }

    async fn detection_stats(&self, since: DateTime<Utc>) -> Result<Vec<DetectionStats>> {
        const SQL: &str = "SELECT detector, COUNT(*) AS predictions, \
            SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS anomalies, \
            CAST(AVG(latency_us) AS DOUBLE PRECISION) AS mean_latency_us \
            FROM prediction_history WHERE created_at >= $1 GROUP BY detector ORDER BY detector";
        let rows: Vec<DetectionStats> =
            with_pool!(self, pool => sqlx::query_as(SQL).bind(since).fetch_all(pool).await?);
        Ok(rows)
    }

    async fn insert_model_metrics(&self, rows: &[ModelMetricRow]) -> Result<()> {
        // One row per class and measure (the long format of 0001's table).
        const SQL: &str = "INSERT INTO model_metrics (created_at, model_kind, model_version, class_label, metric, value, support) \
            VALUES ($1, 'failure-classifier', $2, $3, $4, $5, $6)";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for r in rows {
                let mut measures = vec![("precision", r.precision), ("recall", r.recall), ("f1", r.f1)];
                if let Some(oob) = r.oob_accuracy {
                    measures.push(("oob_accuracy", oob));
                }
                for (metric, value) in measures {
                    sqlx::query(SQL).bind(r.created_at).bind(&r.model_version).bind(&r.class).bind(metric)
                        .bind(value).bind(r.support).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn model_metrics(&self, version: &str) -> Result<Vec<ModelMetricRow>> {
        const SQL: &str = "SELECT created_at, class_label, metric, value, support FROM model_metrics \
            WHERE model_version = $1 ORDER BY id";
        let rows: Vec<MetricCell> =
            with_pool!(self, pool => sqlx::query_as(SQL).bind(version).fetch_all(pool).await?);
        let mut out: Vec<ModelMetricRow> = Vec::new();
        for (created_at, class, metric, value, support) in rows {
            let class = class.unwrap_or_default();
            let at = match out.iter().position(|m| m.class == class) {
                Some(i) => i,
                None => {
                    out.push(ModelMetricRow {
                        model_version: version.to_string(),
                        created_at,
                        class,
                        precision: 0.0,
                        recall: 0.0,
                        f1: 0.0,
                        support: support.unwrap_or(0),
                        oob_accuracy: None,
                    });
                    out.len() - 1
                }
            };
            let m = &mut out[at];
            match metric.as_str() {
                "precision" => m.precision = value,
                "recall" => m.recall = value,
                "f1" => m.f1 = value,
                "oob_accuracy" => m.oob_accuracy = Some(value),
                _ => {}
            }
        }
        Ok(out)
    }

    async fn insert_training_rows(&self, rows: &[TrainingRow]) -> Result<()> {
        const SQL: &str = "INSERT INTO training_data (created_at, label, features, source, entity) VALUES ($1, $2, $3, $4, $5)";
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for r in rows {
                sqlx::query(SQL).bind(now).bind(&r.label).bind(&r.features).bind(&r.source).bind(&r.entity).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn training_rows(&self) -> Result<Vec<TrainingRow>> {
        const SQL: &str = "SELECT label, features, source, entity FROM training_data ORDER BY id";
        let rows: Vec<TrainingRow> =
            with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?);
        Ok(rows)
    }

    async fn save_model(&self, row: &ModelRow) -> Result<()> {
        const SQL: &str = "INSERT INTO models (version, kind, created_at, training_rows, body) \
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO NOTHING";
        with_pool!(self, pool => sqlx::query(SQL).bind(&row.version).bind(&row.kind).bind(row.created_at)
            .bind(row.training_rows).bind(&row.body).execute(pool).await?.rows_affected());
        Ok(())
    }

    async fn latest_model(&self, kind: &str) -> Result<Option<ModelRow>> {
        const SQL: &str = "SELECT version, kind, created_at, training_rows, body FROM models \
            WHERE kind = $1 ORDER BY created_at DESC, version DESC LIMIT 1";
        let row: Option<ModelRow> =
            with_pool!(self, pool => sqlx::query_as(SQL).bind(kind).fetch_optional(pool).await?);
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    fn prediction(detector: &str, anomaly: bool, severity: &str) -> NewPrediction {
        NewPrediction {
            detector: detector.into(),
            entity: "production/api".into(),
            model_version: "isolation-forest-1-abc".into(),
            score: if anomaly { 0.8 } else { 0.4 },
            is_anomaly: anomaly,
            severity: severity.into(),
            failure_type: None,
            recommended_action: "none".into(),
            confidence: 0.5,
            latency_us: 10,
            features: "{}".into(),
            details: "{}".into(),
        }
    }

    #[tokio::test]
    async fn predictions_models_and_metrics_on_both_backends() {
        for db in TestDb::both().await {
            let store = &db.store;
            let ids = store
                .insert_predictions(&[
                    prediction("isolation_forest", true, "high"),
                    prediction("isolation_forest", false, "low"),
                    prediction("failure_classifier", true, "critical"),
                ])
                .await
                .unwrap();
            assert_eq!(ids.len(), 3);
            let all = store
                .predictions(&PredictionQuery {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(all.len(), 3);
            assert_eq!(all[0].id, ids[2]);
            let flagged = store
                .predictions(&PredictionQuery {
                    detector: Some("isolation_forest".into()),
                    is_anomaly: Some(true),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(flagged.len(), 1);
            assert_eq!(flagged[0].severity.as_deref(), Some("high"));
            let page = store
                .predictions(&PredictionQuery {
                    before_id: Some(ids[2]),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(page[0].id, ids[1]);
            let stats = store
                .detection_stats(Utc::now() - chrono::Duration::hours(1))
                .await
                .unwrap();
            assert_eq!(stats.len(), 2);
            let iforest = stats
                .iter()
                .find(|s| s.detector == "isolation_forest")
                .unwrap();
            assert_eq!((iforest.predictions, iforest.anomalies), (2, 1));

            let now = Utc::now();
            store
                .insert_model_metrics(&[ModelMetricRow {
                    model_version: "v1".into(),
                    created_at: now,
                    class: "crash_loop".into(),
                    precision: 0.9,
                    recall: 0.8,
                    f1: 0.85,
                    support: 60,
                    oob_accuracy: Some(0.93),
                }])
                .await
                .unwrap();
            let m = store.model_metrics("v1").await.unwrap();
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].support, 60);
            assert_eq!(
                (m[0].precision, m[0].f1, m[0].oob_accuracy),
                (0.9, 0.85, Some(0.93))
            );

            store
                .insert_training_rows(&[TrainingRow {
                    label: "none".into(),
                    features: "[1,2]".into(),
                    source: "api".into(),
                    entity: None,
                }])
                .await
                .unwrap();
            assert_eq!(store.training_rows().await.unwrap().len(), 1);

            assert!(
                store
                    .latest_model("isolation-forest")
                    .await
                    .unwrap()
                    .is_none()
            );
            for (v, t) in [("a", now - chrono::Duration::minutes(1)), ("b", now)] {
                store
                    .save_model(&ModelRow {
                        version: v.into(),
                        kind: "isolation-forest".into(),
                        created_at: t,
                        training_rows: 1,
                        body: "{}".into(),
                    })
                    .await
                    .unwrap();
            }
            // Saving a version twice keeps the first.
            store
                .save_model(&ModelRow {
                    version: "b".into(),
                    kind: "isolation-forest".into(),
                    created_at: now,
                    training_rows: 2,
                    body: "{}".into(),
                })
                .await
                .unwrap();
            let latest = store
                .latest_model("isolation-forest")
                .await
                .unwrap()
                .unwrap();
            assert_eq!((latest.version.as_str(), latest.training_rows), ("b", 1));
        }
    }
}
