//! The detectors behind the API: the isolation forest over the window features, the
//! failure classifier, the shared Drain miner, prediction history and retraining.
//!
//! Models are loaded from the database at start (newest per kind), or fitted from the
//! bundled synthetic data (and labelled `training_data` rows) and saved, so every replica
//! and restart scores with the same versions. The anomaly model is refitted in the
//! background on a reservoir of recently seen rows that scored normal, and swapped in
//! atomically.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aegis_core::metric_names;
use aegis_detectors::{
    Drain, FAILURE_FEATURES, FailureClassifier, FailureType, IsolationForest,
    IsolationForestParams, Matrix, ModelFile, ModelKind, ModelPayload, RandomForestParams,
    Reservoir, synthetic,
};
use aegis_store::objects::Objects;
use aegis_store::{DetectionStore, ModelMetricRow, ModelRow, NewPrediction, Store};
use arc_swap::ArcSwap;
use chrono::Utc;

/// Detector names in predictions and metrics.
pub const ISOLATION_FOREST: &str = "isolation_forest";
/// The threshold of the batch forests fitted here (`/api/v1/detect-anomaly`, `aegis model
/// fit`): on the isolation forest's own scale, where 0.5 is an average point. The live
/// loop's `anomaly_threshold` is on the stream detector's likelihood scale instead.
pub const BATCH_THRESHOLD: f64 = 0.6;
/// The failure classifier's detector name.
pub const FAILURE_CLASSIFIER: &str = "failure_classifier";

/// Rows the reservoir keeps for retraining.
const RESERVOIR_ROWS: usize = 8_192;
/// Fewest normal rows before a retraining replaces the model.
const MIN_RETRAIN_ROWS: usize = 512;
/// Latencies kept per detector for percentiles.
const LATENCY_WINDOW: usize = 2_048;

/// A loaded isolation forest and its file.
#[derive(Debug)]
pub struct AnomalyModel {
    /// The model file (version, schema, threshold).
    pub file: ModelFile,
    /// The forest.
    pub forest: IsolationForest,
}

/// A loaded failure classifier and its file.
#[derive(Debug)]
pub struct ClassifierModel {
    /// The model file.
    pub file: ModelFile,
    /// The classifier.
    pub classifier: FailureClassifier,
}

/// Shared detector state.
#[derive(Debug)]
pub struct DetectorService {
    store: Store,
    objects: Option<Objects>,
    threshold: f64,
    anomaly: ArcSwap<AnomalyModel>,
    classifier: ArcSwap<ClassifierModel>,
    drain: Mutex<Drain>,
    reservoir: Mutex<Reservoir>,
    latencies: Mutex<[VecDeque<u64>; 2]>,
    last_retrain: Mutex<Option<chrono::DateTime<Utc>>>,
}

fn schema() -> Vec<String> {
    FAILURE_FEATURES.iter().map(|s| s.to_string()).collect()
}

/// The feature schema a stored model of `kind` must carry: the window features for the
/// forests, none for the template miner.
fn schema_for(kind: &str) -> Vec<String> {
    if kind == ModelKind::DrainTemplates.as_str() {
        Vec::new()
    } else {
        schema()
    }
}

fn model_file(
    payload: ModelPayload,
    threshold: Option<f64>,
    rows: usize,
) -> Result<ModelFile, crate::Error> {
    let now = Utc::now();
    ModelFile::new(
        payload,
        schema(),
        threshold,
        rows,
        now.to_rfc3339(),
        now.timestamp(),
    )
    .map_err(|e| crate::Error::Model(e.to_string()))
}

impl DetectorService {
    /// Loads the newest models from `store`, or fits and saves them.
    pub async fn start(store: Store, threshold: f64) -> Result<Arc<Self>, crate::Error> {
        Self::start_with(store, None, threshold).await
    }

    /// Like [`start`](Self::start), with models also kept in (and first looked for in)
    /// object storage, which replicas share.
    pub async fn start_with(
        store: Store,
        objects: Option<Objects>,
        threshold: f64,
    ) -> Result<Arc<Self>, crate::Error> {
        let places = Places {
            store: &store,
            objects: objects.as_ref(),
        };
        let anomaly = match places.load(ModelKind::IsolationForest.as_str()).await {
            Some(file) => match &file.payload {
                ModelPayload::IsolationForest(f) => {
                    let forest = f.clone();
                    AnomalyModel { file, forest }
                }
                _ => {
                    return Err(crate::Error::Model(
                        "stored isolation-forest model holds another kind".into(),
                    ));
                }
            },
            None => {
                let rows = synthetic::healthy_rows(1, 4_096);
                let model = fit_anomaly(&rows, threshold)?;
                places.save(&model.file).await?;
                model
            }
        };
        let classifier = match places.load(ModelKind::FailureClassifier.as_str()).await {
            Some(file) => match &file.payload {
                ModelPayload::FailureClassifier(c) => {
                    let classifier = c.clone();
                    ClassifierModel { file, classifier }
                }
                _ => {
                    return Err(crate::Error::Model(
                        "stored failure-classifier model holds another kind".into(),
                    ));
                }
            },
            None => train_classifier(&places).await?,
        };
        // The template miner's state: template ids stay stable across restarts and replicas.
        let drain = match places
            .load(ModelKind::DrainTemplates.as_str())
            .await
            .map(|f| f.payload)
        {
            Some(ModelPayload::DrainTemplates(d)) => d,
            _ => Drain::default(),
        };
        Ok(Arc::new(Self {
            objects,
            store,
            threshold,
            anomaly: ArcSwap::from_pointee(anomaly),
            classifier: ArcSwap::from_pointee(classifier),
            drain: Mutex::new(drain),
            reservoir: Mutex::new(Reservoir::new(FAILURE_FEATURES.len(), RESERVOIR_ROWS, 7)),
            latencies: Mutex::new([VecDeque::new(), VecDeque::new()]),
            last_retrain: Mutex::new(None),
        }))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn places(&self) -> Places<'_> {
        Places {
            store: &self.store,
            objects: self.objects.as_ref(),
        }
    }

    /// The configured anomaly threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The current anomaly model.
    pub fn anomaly(&self) -> Arc<AnomalyModel> {
        self.anomaly.load_full()
    }

    /// The current classifier.
    pub fn classifier(&self) -> Arc<ClassifierModel> {
        self.classifier.load_full()
    }

    /// Runs `f` with the shared template miner.
    pub fn with_drain<R>(&self, f: impl FnOnce(&mut Drain) -> R) -> R {
        let mut guard = self
            .drain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Offers a row that scored normal to the retraining reservoir.
    pub fn remember_normal(&self, row: &[f32]) {
        self.reservoir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .offer(row);
    }

    /// Records an inference time and its metric.
    pub fn observe(&self, detector: &'static str, micros: u64) {
        metrics::histogram!(metric_names::INFERENCE_DURATION_SECONDS, "detector" => detector)
            .record(micros as f64 / 1e6);
        let slot = usize::from(detector == FAILURE_CLASSIFIER);
        let mut l = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = &mut l[slot];
        if q.len() == LATENCY_WINDOW {
            q.pop_front();
        }
        q.push_back(micros);
    }

    /// p50 and p99 inference time in microseconds over the recent window, with the count.
    pub fn latency(&self, detector: &str) -> (u64, u64, usize) {
        let slot = usize::from(detector == FAILURE_CLASSIFIER);
        let mut v: Vec<u64> = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[slot]
            .iter()
            .copied()
            .collect();
        if v.is_empty() {
            return (0, 0, 0);
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.5), at(0.99), v.len())
    }

    /// Reservoir rows held and rows offered, and when the model was last refitted.
    pub fn retraining_state(&self) -> (usize, u64, Option<chrono::DateTime<Utc>>) {
        let r = self
            .reservoir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = *self
            .last_retrain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (r.len(), r.seen(), last)
    }

    /// Records predictions; returns their ids.
    pub async fn record(&self, rows: &[NewPrediction]) -> Result<Vec<i64>, aegis_store::Error> {
        self.store.insert_predictions(rows).await
    }

    /// Retrains the failure classifier on the bundled set and every labelled row, stores it
    /// with its per-class figures, and swaps it in; returns the new version.
    pub async fn retrain_classifier(&self) -> Result<String, crate::Error> {
        let model = train_classifier(&self.places()).await?;
        let version = model.file.version.clone();
        self.classifier.store(Arc::new(model));
        tracing::info!(version = %version, "failure classifier retrained");
        Ok(version)
    }

    /// Saves the template miner's state (a `drain-templates` model) to the database and
    /// object storage; returns its version.
    pub async fn save_templates(&self) -> Result<String, crate::Error> {
        let drain = self.with_drain(|d| d.clone());
        let templates = drain.len();
        let now = Utc::now();
        let file = ModelFile::new(
            ModelPayload::DrainTemplates(drain),
            Vec::new(),
            None,
            templates,
            now.to_rfc3339(),
            now.timestamp(),
        )
        .map_err(|e| crate::Error::Model(e.to_string()))?;
        self.places().save(&file).await?;
        Ok(file.version)
    }

    /// Refits the anomaly model on the reservoir when it holds enough rows; returns the
    /// new version. The fit runs on the blocking pool; the swap is atomic.
    pub async fn retrain(self: &Arc<Self>) -> Result<Option<String>, crate::Error> {
        let rows = {
            let r = self
                .reservoir
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if r.len() < MIN_RETRAIN_ROWS {
                return Ok(None);
            }
            r.to_matrix()
        };
        let threshold = self.threshold;
        let model = tokio::task::spawn_blocking(move || fit_anomaly(&rows, threshold))
            .await
            .map_err(|e| crate::Error::Model(e.to_string()))??;
        self.places().save(&model.file).await?;
        let version = model.file.version.clone();
        self.anomaly.store(Arc::new(model));
        *self
            .last_retrain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Utc::now());
        tracing::info!(version = %version, "anomaly model retrained on recent normal rows");
        Ok(Some(version))
    }
}

fn fit_anomaly(rows: &Matrix, threshold: f64) -> Result<AnomalyModel, crate::Error> {
    let params = IsolationForestParams {
        seed: 1,
        ..Default::default()
    };
    let forest = IsolationForest::fit(rows.view(), &params)
        .map_err(|e| crate::Error::Model(e.to_string()))?;
    let file = model_file(
        ModelPayload::IsolationForest(forest.clone()),
        Some(threshold),
        rows.rows(),
    )?;
    Ok(AnomalyModel { file, forest })
}

/// Trains on the bundled synthetic set plus every labelled row in `training_data`, and
/// stores the model and its per-class figures.
async fn train_classifier(places: &Places<'_>) -> Result<ClassifierModel, crate::Error> {
    let store = places.store;
    let (rows, mut labels) = synthetic::failure_training_set(1, 300);
    let mut data = rows.as_slice().to_vec();
    for r in store
        .training_rows()
        .await
        .map_err(|e| crate::Error::Model(e.to_string()))?
    {
        let (Some(label), Ok(values)) = (
            FailureType::parse(&r.label),
            serde_json::from_str::<Vec<f32>>(&r.features),
        ) else {
            tracing::warn!(label = %r.label, "training row skipped: unknown label or malformed features");
            continue;
        };
        if values.len() == FAILURE_FEATURES.len() && values.iter().all(|v| v.is_finite()) {
            data.extend_from_slice(&values);
            labels.push(label);
        }
    }
    let all = Matrix::new(data, FAILURE_FEATURES.len())
        .map_err(|e| crate::Error::Model(e.to_string()))?;
    let classifier = tokio::task::spawn_blocking(move || {
        FailureClassifier::train(
            &all,
            &labels,
            &RandomForestParams {
                trees: 60,
                seed: 1,
                ..Default::default()
            },
        )
    })
    .await
    .map_err(|e| crate::Error::Model(e.to_string()))?
    .map_err(|e| crate::Error::Model(e.to_string()))?;
    let rows = classifier.training_rows;
    let file = model_file(
        ModelPayload::FailureClassifier(classifier.clone()),
        None,
        rows,
    )?;
    places.save(&file).await?;
    let now = Utc::now();
    let metrics: Vec<ModelMetricRow> = classifier
        .metrics
        .iter()
        .map(|m| ModelMetricRow {
            model_version: file.version.clone(),
            created_at: now,
            class: m.class.clone(),
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
            support: m.support as i64,
            oob_accuracy: classifier.oob_accuracy(),
        })
        .collect();
    store
        .insert_model_metrics(&metrics)
        .await
        .map_err(|e| crate::Error::Model(e.to_string()))?;
    Ok(ClassifierModel { file, classifier })
}

/// Where models are kept: the database always, object storage when configured.
struct Places<'a> {
    store: &'a Store,
    objects: Option<&'a Objects>,
}

impl Places<'_> {
    /// The newest model of `kind`: object storage first (shared by replicas), then the
    /// database; `None` when neither has a usable one.
    async fn load(&self, kind: &str) -> Option<ModelFile> {
        if let Some(objects) = self.objects {
            match latest_model_object(objects, kind).await {
                Ok(Some(f)) if f.feature_schema == schema_for(kind) => {
                    tracing::info!(version = %f.version, url = %objects.url(), "model loaded from object storage");
                    return Some(f);
                }
                Ok(Some(f)) => {
                    tracing::warn!(version = %f.version, "model in object storage has another feature schema")
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not read models from object storage; trying the database")
                }
            }
        }
        load(self.store, kind).await
    }

    /// Saves to the database, and to object storage when configured (a failure there is
    /// logged: the database copy still serves this replica).
    async fn save(&self, file: &ModelFile) -> Result<(), crate::Error> {
        save(self.store, file).await?;
        if let Some(objects) = self.objects
            && let Err(error) = save_model_object(objects, file).await
        {
            tracing::warn!(%error, version = %file.version, "could not save the model to object storage");
        }
        Ok(())
    }
}

async fn load(store: &Store, kind: &str) -> Option<ModelFile> {
    match store.latest_model(kind).await {
        Ok(Some(row)) => match ModelFile::from_bytes(row.body.as_bytes()) {
            Ok(f) if f.feature_schema == schema_for(kind) => Some(f),
            Ok(_) => {
                tracing::warn!(version = %row.version, "stored model has another feature schema; fitting a new one");
                None
            }
            Err(error) => {
                tracing::warn!(version = %row.version, %error, "stored model unreadable; fitting a new one");
                None
            }
        },
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "could not read stored models; fitting new ones");
            None
        }
    }
}

async fn save(store: &Store, file: &ModelFile) -> Result<(), crate::Error> {
    let body = file
        .to_bytes()
        .map_err(|e| crate::Error::Model(e.to_string()))?;
    let created_at = chrono::DateTime::parse_from_rfc3339(&file.created_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    store
        .save_model(&ModelRow {
            version: file.version.clone(),
            kind: file.kind().as_str().to_string(),
            created_at,
            training_rows: file.training_rows as i64,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
        .await
        .map_err(|e| crate::Error::Model(e.to_string()))
}

/// Time since `started` in whole microseconds.
pub fn micros_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Saves a model file to object storage under its kind and version and points `LATEST` at it.
pub async fn save_model_object(objects: &Objects, file: &ModelFile) -> Result<(), crate::Error> {
    let kind = file.kind().as_str();
    let body = file
        .to_bytes()
        .map_err(|e| crate::Error::Model(e.to_string()))?;
    objects
        .put(&format!("models/{kind}/{}.json", file.version), body)
        .await?;
    objects
        .put(
            &format!("models/{kind}/LATEST"),
            file.version.clone().into_bytes(),
        )
        .await
        .map_err(|e| crate::Error::Model(e.to_string()))
}

/// The current model of `kind` (`isolation-forest`, …) in object storage, when one was saved.
pub async fn latest_model_object(
    objects: &Objects,
    kind: &str,
) -> Result<Option<ModelFile>, crate::Error> {
    let Some(version) = objects.get(&format!("models/{kind}/LATEST")).await? else {
        return Ok(None);
    };
    let version = String::from_utf8_lossy(&version).trim().to_string();
    let Some(body) = objects
        .get(&format!("models/{kind}/{version}.json"))
        .await?
    else {
        return Err(crate::Error::Model(format!(
            "models/{kind}/LATEST names `{version}`, which is missing"
        )));
    };
    ModelFile::from_bytes(&body)
        .map(Some)
        .map_err(|e| crate::Error::Model(format!("model `{version}`: {e}")))
}
