//! `/api/v1/detect-anomaly`, `/api/v1/detect-failure`, `/api/v1/metrics/predictions` and
//! `/api/v1/metrics/stats`.
//!
//! One file for the four endpoints because they share the request shapes, the feature
//! row and the per-series scoring; splitting them would scatter one contract over files.

use std::collections::BTreeMap;
use std::time::Instant;

use aegis_core::metric_names;
use aegis_detectors::{
    Assessment, Contribution, FAILURE_FEATURES, HEALTHY_DEFAULTS, IsolationForest,
    IsolationForestParams, LogFeatures, LogWindow, Matrix, apply_log_features, assess,
};
use aegis_store::{DetectionStore, NewPrediction, PredictionQuery, PredictionRow};
use axum::extract::{Query, State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::paging;
use crate::{ApiError, AppState, Json};
use aegis_runtime::detector_service::{
    DetectorService, FAILURE_CLASSIFIER, ISOLATION_FOREST, micros_since,
};

/// Most samples in one series request.
const MAX_SAMPLES: usize = 100_000;
/// Fewest samples for a series to be judged against itself.
const MIN_SAMPLES: usize = 16;
/// Most log lines in one failure request.
const MAX_LOG_LINES: usize = 10_000;
/// Longest entity name.
const MAX_ENTITY_LEN: usize = 253;

fn service(state: &AppState) -> Result<&std::sync::Arc<DetectorService>, ApiError> {
    state
        .detectors()
        .ok_or_else(|| ApiError::unavailable("the detectors are still loading their models", 5))
}

fn entity(e: Option<String>) -> Result<String, ApiError> {
    let e = e.unwrap_or_else(|| "adhoc".into());
    if e.is_empty() || e.len() > MAX_ENTITY_LEN {
        return Err(ApiError::bad_request(format!(
            "`entity` must be 1 to {MAX_ENTITY_LEN} bytes long"
        )));
    }
    Ok(e)
}

/// A row of [`FAILURE_FEATURES`] from named values: unknown names are refused, missing
/// ones take the healthy defaults (and are reported).
fn feature_row(
    features: &BTreeMap<String, f64>,
) -> Result<([f32; 16], Vec<&'static str>), ApiError> {
    if let Some(unknown) = features
        .keys()
        .find(|k| !FAILURE_FEATURES.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown feature `{unknown}`; the model's features are: {}",
            FAILURE_FEATURES.join(", ")
        )));
    }
    let mut row = HEALTHY_DEFAULTS;
    let mut defaulted = Vec::new();
    for (i, name) in FAILURE_FEATURES.iter().enumerate() {
        match features.get(*name) {
            Some(v) if v.is_finite() && v.abs() < 1e30 => row[i] = *v as f32,
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "feature `{name}` is not a finite number: {v}"
                )));
            }
            None => defaulted.push(*name),
        }
    }
    Ok((row, defaulted))
}

fn contributions(names: &[&str], row: &[f32], shares: &[f64]) -> Vec<Contribution> {
    names
        .iter()
        .zip(row)
        .zip(shares)
        .map(|((n, v), c)| Contribution {
            feature: (*n).to_string(),
            contribution: *c,
            value: f64::from(*v),
        })
        .collect()
}

fn count_detection(detector: &'static str, a: &Assessment, flagged: bool) {
    if flagged {
        metrics::counter!(metric_names::DETECTIONS_TOTAL, "detector" => detector, "severity" => a.severity.as_str())
            .increment(1);
    }
}

/// A sample of a series: a bare value or `{timestamp, value}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Sample {
    Value(f64),
    Point {
        #[serde(rename = "timestamp")]
        _timestamp: serde_json::Value,
        value: f64,
    },
}

impl Sample {
    fn value(&self) -> f64 {
        match self {
            Sample::Value(v) | Sample::Point { value: v, .. } => *v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnomalyRequest {
    /// The workload (`namespace/deployment`).
    entity: Option<String>,
    /// Named window features (see the stats endpoint for the schema).
    features: Option<BTreeMap<String, f64>>,
    /// Or a series, judged against itself.
    samples: Option<Vec<Sample>>,
}

#[derive(Debug, Serialize)]
pub(super) struct AnomalyResponse {
    prediction_id: i64,
    detector: &'static str,
    model_version: String,
    entity: String,
    score: f64,
    threshold: f64,
    is_anomaly: bool,
    #[serde(flatten)]
    assessment: AssessmentBody,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    defaulted_features: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<SeriesScores>,
    inference_us: u64,
}

#[derive(Debug, Serialize)]
struct AssessmentBody {
    severity: &'static str,
    severity_score: f64,
    recommendation: aegis_detectors::Recommendation,
    contributions: Vec<Contribution>,
}

impl From<Assessment> for AssessmentBody {
    fn from(a: Assessment) -> Self {
        Self {
            severity: a.severity.as_str(),
            severity_score: a.severity_score,
            recommendation: a.recommendation,
            contributions: a.contributions,
        }
    }
}

#[derive(Debug, Serialize)]
struct SeriesScores {
    scores: Vec<f64>,
    anomalies: Vec<usize>,
}

/// Per point of a series: its value, its change, and its distance from the median of the
/// previous ten points — what makes a spike or a step stand out.
const SERIES_FEATURES: [&str; 3] = ["value", "delta", "deviation"];

fn series_matrix(values: &[f64]) -> Result<Matrix, ApiError> {
    let mut data = Vec::with_capacity(values.len() * 3);
    let mut window: Vec<f64> = Vec::with_capacity(10);
    for (i, v) in values.iter().enumerate() {
        let delta = if i == 0 { 0.0 } else { v - values[i - 1] };
        let lo = i.saturating_sub(10);
        window.clear();
        window.extend_from_slice(&values[lo..i]);
        window.sort_by(f64::total_cmp);
        let median = window.get(window.len() / 2).copied().unwrap_or(*v);
        data.extend([*v as f32, delta as f32, (v - median) as f32]);
    }
    Matrix::new(data, 3).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[utoipa::path(post, operation_id = "detect_anomaly", path = "/api/v1/detect-anomaly", tag = "detectors", request_body = Object, responses((status = 200, body = Object), (status = 400), (status = 503)), security(("bearer" = [])))]
pub(super) async fn detect_anomaly(
    State(state): State<AppState>,
    Json(req): Json<AnomalyRequest>,
) -> Result<Json<AnomalyResponse>, ApiError> {
    let svc = service(&state)?.clone();
    let entity = entity(req.entity)?;
    let threshold = svc.threshold();
    let started = Instant::now();
    let (model_version, score, assessment, defaulted, series, features_json) = match (
        req.features,
        req.samples,
    ) {
        (Some(features), None) => {
            let (row, defaulted) = feature_row(&features)?;
            let model = svc.anomaly();
            // One walk of the trees gives both the explanation and the score.
            let (h, shares) = model
                .forest
                .explain_row(&row)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let score = model.forest.score_of_path_length(h);
            let threshold = model.file.threshold.unwrap_or(threshold);
            if score < threshold {
                svc.remember_normal(&row);
            }
            let a = assess(
                Some(score),
                threshold,
                None,
                contributions(&FAILURE_FEATURES, &row, &shares),
            );
            (
                model.file.version.clone(),
                score,
                a,
                defaulted,
                None,
                json!(features),
            )
        }
        (None, Some(samples)) => {
            if samples.len() < MIN_SAMPLES || samples.len() > MAX_SAMPLES {
                return Err(ApiError::bad_request(format!(
                    "`samples` must hold {MIN_SAMPLES} to {MAX_SAMPLES} points, got {}",
                    samples.len()
                )));
            }
            let values: Vec<f64> = samples.iter().map(Sample::value).collect();
            if let Some(i) = values.iter().position(|v| !v.is_finite() || v.abs() > 1e30) {
                return Err(ApiError::bad_request(format!(
                    "sample {i} is not a finite number"
                )));
            }
            let x = series_matrix(&values)?;
            // The series is its own reference: fit on it, score every point.
            let (scores, shares, last) = tokio::task::spawn_blocking(move || {
                let forest = IsolationForest::fit(
                    x.view(),
                    &IsolationForestParams {
                        seed: 1,
                        ..Default::default()
                    },
                )?;
                let scores = forest.score(x.view())?;
                let last = x.row(x.rows() - 1).to_vec();
                let (_, shares) = forest.explain_row(&last)?;
                Ok::<_, aegis_detectors::Error>((scores, shares, last))
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let score = scores.last().copied().unwrap_or(0.0);
            let anomalies: Vec<usize> = (0..scores.len())
                .filter(|i| scores[*i] >= threshold)
                .collect();
            let a = assess(
                Some(score),
                threshold,
                None,
                contributions(&SERIES_FEATURES, &last, &shares),
            );
            let version = format!("series-fit-{}", values.len());
            (
                version,
                score,
                a,
                Vec::new(),
                Some(SeriesScores { scores, anomalies }),
                json!({"samples": values.len()}),
            )
        }
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of `features` (named window features) or `samples` (a series)",
            ));
        }
    };
    let inference_us = micros_since(started);
    svc.observe(ISOLATION_FOREST, inference_us);
    let is_anomaly = score >= threshold;
    count_detection(ISOLATION_FOREST, &assessment, is_anomaly);
    let body = AssessmentBody::from(assessment);
    let details = json!({"severity_score": body.severity_score, "recommendation": body.recommendation, "contributions": body.contributions});
    let ids = svc
        .record(&[NewPrediction {
            detector: ISOLATION_FOREST.into(),
            entity: entity.clone(),
            model_version: model_version.clone(),
            score,
            is_anomaly,
            severity: body.severity.into(),
            failure_type: None,
            recommended_action: body.recommendation.action.as_str().into(),
            confidence: body.recommendation.confidence,
            latency_us: i64::try_from(inference_us).unwrap_or(i64::MAX),
            features: features_json.to_string(),
            details: details.to_string(),
        }])
        .await?;
    Ok(Json(AnomalyResponse {
        prediction_id: ids.first().copied().unwrap_or_default(),
        detector: ISOLATION_FOREST,
        model_version,
        entity,
        score,
        threshold,
        is_anomaly,
        assessment: body,
        defaulted_features: defaulted,
        series,
        inference_us,
    }))
}

/// A log line: bare text or `{line, level}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum LogLine {
    Text(String),
    Line { line: String, level: Option<String> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FailureRequest {
    entity: Option<String>,
    /// Named window features; missing ones take healthy defaults.
    #[serde(default)]
    features: BTreeMap<String, f64>,
    /// Log lines of the same window; they set the log features.
    #[serde(default)]
    logs: Vec<LogLine>,
}

#[derive(Debug, Serialize)]
struct TemplateCount {
    id: u32,
    template: String,
    count: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct FailureResponse {
    prediction_id: i64,
    detector: &'static str,
    model_version: String,
    entity: String,
    failure_type: &'static str,
    confidence: f64,
    probabilities: BTreeMap<&'static str, f64>,
    anomaly_score: f64,
    #[serde(flatten)]
    assessment: AssessmentBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_features: Option<LogFeatures>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    templates: Vec<TemplateCount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    defaulted_features: Vec<&'static str>,
    inference_us: u64,
}

#[utoipa::path(post, operation_id = "detect_failure", path = "/api/v1/detect-failure", tag = "detectors", request_body = Object, responses((status = 200, body = Object), (status = 400), (status = 503)), security(("bearer" = [])))]
pub(super) async fn detect_failure(
    State(state): State<AppState>,
    Json(req): Json<FailureRequest>,
) -> Result<Json<FailureResponse>, ApiError> {
    let svc = service(&state)?.clone();
    let entity = entity(req.entity)?;
    if req.features.is_empty() && req.logs.is_empty() {
        return Err(ApiError::bad_request("send `features`, `logs` or both"));
    }
    if req.logs.len() > MAX_LOG_LINES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_LOG_LINES} log lines per request"
        )));
    }
    let started = Instant::now();
    let (mut row, mut defaulted) = feature_row(&req.features)?;
    let (log_features, templates) = if req.logs.is_empty() {
        (None, Vec::new())
    } else {
        // The request's lines are mined against a copy of the shared miner: what the
        // engine has learned decides which templates are new, and nothing a caller sends
        // here changes it (a request of crafted lines must not fill the engine's miner).
        let mut scratch = svc.with_drain(|drain| drain.clone());
        let (features, templates) = {
            let drain = &mut scratch;
            let mut w = LogWindow::new();
            for l in &req.logs {
                match l {
                    LogLine::Text(t) => w.add(drain, t, None),
                    LogLine::Line { line, level } => w.add(drain, line, level.as_deref()),
                };
            }
            let f = w.features();
            let t: Vec<TemplateCount> = f
                .templates
                .iter()
                .take(10)
                .map(|(id, count)| TemplateCount {
                    id: *id,
                    template: drain.template(*id).unwrap_or_default(),
                    count: *count,
                })
                .collect();
            (f, t)
        };
        apply_log_features(&mut row, &features);
        defaulted.retain(|n| !n.starts_with("log_") && !n.ends_with("_events"));
        (Some(features), templates)
    };
    let model = svc.classifier();
    let prediction = model
        .classifier
        .classify(&row)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let anomaly = svc.anomaly();
    let (h, shares) = anomaly
        .forest
        .explain_row(&row)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let anomaly_score = anomaly.forest.score_of_path_length(h);
    let threshold = anomaly.file.threshold.unwrap_or(svc.threshold());
    let assessment = assess(
        Some(anomaly_score),
        threshold,
        Some(&prediction),
        contributions(&FAILURE_FEATURES, &row, &shares),
    );
    let inference_us = micros_since(started);
    svc.observe(FAILURE_CLASSIFIER, inference_us);
    let failing = prediction.failure_type != aegis_detectors::FailureType::None;
    count_detection(FAILURE_CLASSIFIER, &assessment, failing);
    let body = AssessmentBody::from(assessment);
    let probabilities: BTreeMap<&'static str, f64> = prediction
        .probabilities
        .iter()
        .map(|(t, p)| (t.as_str(), *p))
        .collect();
    let details = json!({"probabilities": probabilities, "anomaly_score": anomaly_score, "recommendation": body.recommendation});
    let features_json: BTreeMap<&str, f32> = FAILURE_FEATURES.iter().copied().zip(row).collect();
    let ids = svc
        .record(&[NewPrediction {
            detector: FAILURE_CLASSIFIER.into(),
            entity: entity.clone(),
            model_version: model.file.version.clone(),
            score: prediction.confidence,
            is_anomaly: failing,
            severity: body.severity.into(),
            failure_type: Some(prediction.failure_type.as_str().into()),
            recommended_action: body.recommendation.action.as_str().into(),
            confidence: body.recommendation.confidence,
            latency_us: i64::try_from(inference_us).unwrap_or(i64::MAX),
            features: json!(features_json).to_string(),
            details: details.to_string(),
        }])
        .await?;
    Ok(Json(FailureResponse {
        prediction_id: ids.first().copied().unwrap_or_default(),
        detector: FAILURE_CLASSIFIER,
        model_version: model.file.version.clone(),
        entity,
        failure_type: prediction.failure_type.as_str(),
        confidence: prediction.confidence,
        probabilities,
        anomaly_score,
        assessment: body,
        log_features,
        templates,
        defaulted_features: defaulted,
        inference_us,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PredictionParams {
    detector: Option<String>,
    entity: Option<String>,
    severity: Option<String>,
    is_anomaly: Option<bool>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct PredictionPage {
    predictions: Vec<PredictionRow>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, operation_id = "prediction_history", path = "/api/v1/metrics/predictions", tag = "detectors",
    params(("detector" = Option<String>, Query), ("entity" = Option<String>, Query), ("severity" = Option<String>, Query),
           ("is_anomaly" = Option<bool>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query),
           ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = Object), (status = 400)), security(("bearer" = [])))]
pub(super) async fn predictions(
    State(state): State<AppState>,
    params: Result<Query<PredictionParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PredictionPage>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(d) = &p.detector
        && d != ISOLATION_FOREST
        && d != FAILURE_CLASSIFIER
        && d != "engine"
    {
        return Err(ApiError::bad_request(format!(
            "`detector` must be {ISOLATION_FOREST}, {FAILURE_CLASSIFIER} or engine, not `{d}`"
        )));
    }
    if let Some(s) = &p.severity {
        s.parse::<aegis_core::Severity>()
            .map_err(|e| ApiError::bad_request(format!("`severity`: {e}")))?;
    }
    let w = paging::window(
        p.from.as_deref(),
        p.to.as_deref(),
        p.cursor.as_deref(),
        p.limit,
    )?;
    let rows = state
        .store()
        .predictions(&PredictionQuery {
            detector: p.detector,
            entity: p.entity,
            severity: p.severity,
            is_anomaly: p.is_anomaly,
            from: w.from,
            to: w.to,
            before_id: w.before_id,
            limit: w.limit,
        })
        .await?;
    let next_cursor = paging::next_cursor(rows.len(), w.limit, rows.last().map(|r| r.id));
    Ok(Json(PredictionPage {
        predictions: rows,
        next_cursor,
    }))
}

#[utoipa::path(get, operation_id = "detector_stats", path = "/api/v1/metrics/stats", tag = "detectors", responses((status = 200, body = Object), (status = 503)), security(("bearer" = [])))]
pub(super) async fn stats(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let svc = service(&state)?.clone();
    let anomaly = svc.anomaly();
    let classifier = svc.classifier();
    let class_metrics = state
        .store()
        .model_metrics(&classifier.file.version)
        .await?;
    let now = Utc::now();
    let last_hour = state
        .store()
        .detection_stats(now - chrono::Duration::hours(1))
        .await?;
    let last_day = state
        .store()
        .detection_stats(now - chrono::Duration::days(1))
        .await?;
    let (reservoir_rows, offered, last_retrain) = svc.retraining_state();
    let latency = |d: &str| {
        let (p50, p99, n) = svc.latency(d);
        json!({"p50_us": p50, "p99_us": p99, "samples": n})
    };
    Ok(Json(json!({
        "models": [
            {
                "detector": ISOLATION_FOREST,
                "kind": anomaly.file.kind().as_str(),
                "version": anomaly.file.version,
                "created_at": anomaly.file.created_at,
                "training_rows": anomaly.file.training_rows,
                "feature_schema": anomaly.file.feature_schema,
                "threshold": anomaly.file.threshold,
                "params": anomaly.forest.params(),
            },
            {
                "detector": FAILURE_CLASSIFIER,
                "kind": classifier.file.kind().as_str(),
                "version": classifier.file.version,
                "created_at": classifier.file.created_at,
                "training_rows": classifier.file.training_rows,
                "feature_schema": classifier.file.feature_schema,
                "oob_accuracy": classifier.classifier.oob_accuracy(),
                "class_metrics": class_metrics,
            }
        ],
        "detections": {"last_hour": last_hour, "last_day": last_day},
        "latency": {ISOLATION_FOREST: latency(ISOLATION_FOREST), FAILURE_CLASSIFIER: latency(FAILURE_CLASSIFIER)},
        "retraining": {
            "reservoir_rows": reservoir_rows,
            "rows_offered": offered,
            "min_rows": 512,
            "last_retrain_at": last_retrain,
        },
        "templates": svc.with_drain(|d| d.len()),
        // The self-healing loop: warm-up state, activity, what it dropped.
        "engine": state.healing().map(|h| h.stats(now.timestamp_millis())),
    })))
}

/// Most labelled rows in one request.
const MAX_TRAINING_ROWS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LabelledRow {
    /// A failure type (`none` for healthy windows).
    label: String,
    /// Named window features; all sixteen are required for a training row.
    features: BTreeMap<String, f64>,
    entity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrainingRequest {
    rows: Vec<LabelledRow>,
}

#[utoipa::path(post, operation_id = "add_training_data", path = "/api/v1/training-data", tag = "detectors", request_body = Object, responses((status = 201, body = Object), (status = 400)), security(("bearer" = [])))]
pub(super) async fn add_training_data(
    State(state): State<AppState>,
    Json(req): Json<TrainingRequest>,
) -> Result<(axum::http::StatusCode, Json<serde_json::Value>), ApiError> {
    if req.rows.is_empty() || req.rows.len() > MAX_TRAINING_ROWS {
        return Err(ApiError::bad_request(format!(
            "`rows` must hold 1 to {MAX_TRAINING_ROWS} rows"
        )));
    }
    let mut rows = Vec::with_capacity(req.rows.len());
    for (i, r) in req.rows.iter().enumerate() {
        let Some(label) = aegis_detectors::FailureType::parse(&r.label) else {
            return Err(ApiError::bad_request(format!(
                "row {}: `label` must be one of crash_loop, service_down, memory_leak, high_latency, error_spike, resource_saturation, none; not `{}`",
                i + 1,
                r.label
            )));
        };
        let (row, defaulted) = feature_row(&r.features)
            .map_err(|e| ApiError::bad_request(format!("row {}: {}", i + 1, e.message())))?;
        if !defaulted.is_empty() {
            return Err(ApiError::bad_request(format!(
                "row {}: missing features: {}",
                i + 1,
                defaulted.join(", ")
            )));
        }
        rows.push(aegis_store::TrainingRow {
            label: label.as_str().into(),
            features: json!(row).to_string(),
            source: "api".into(),
            entity: r.entity.clone(),
        });
    }
    state.store().insert_training_rows(&rows).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({"inserted": rows.len()})),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetrainRequest {
    /// `failure-classifier` or `isolation-forest`.
    model: String,
}

#[utoipa::path(post, operation_id = "retrain_model", path = "/api/v1/models/retrain", tag = "detectors", request_body = Object, responses((status = 200, body = Object), (status = 400), (status = 409)), security(("bearer" = [])))]
pub(super) async fn retrain(
    State(state): State<AppState>,
    Json(req): Json<RetrainRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let svc = service(&state)?.clone();
    match req.model.as_str() {
        "failure-classifier" => {
            let version = svc.retrain_classifier().await.map_err(ApiError::internal)?;
            let metrics = state.store().model_metrics(&version).await?;
            Ok(Json(
                json!({"model": req.model, "version": version, "class_metrics": metrics}),
            ))
        }
        "isolation-forest" => match svc.retrain().await.map_err(ApiError::internal)? {
            Some(version) => Ok(Json(json!({"model": req.model, "version": version}))),
            None => Err(ApiError::conflict(
                "too few recent normal rows to refit the isolation forest yet (at least 512)",
            )),
        },
        other => Err(ApiError::bad_request(format!(
            "`model` must be failure-classifier or isolation-forest, not `{other}`"
        ))),
    }
}
