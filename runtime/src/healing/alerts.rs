//! Alerts in: Alertmanager's webhook (payload version 4) as detections of workloads.
//!
//! A firing alert whose labels name a workload (the engine's entity rules: `namespace` and
//! `deployment`/`statefulset`/`pod`/…) becomes a detection of that workload. Its action comes
//! from the `alert_actions` rules (`alertname` and label matchers → action), else from the
//! alert's own `aegis_action` label; its severity from the `severity` label. Then it goes
//! the way of the engine's detections: an incident (one per workload), the policy question,
//! approvals, the executor's guards, the decision record (naming the alert), audit, and
//! post-action verification, which reads the alert: resolved is effective, still firing
//! (Alertmanager re-sends it) ineffective.
//!
//! Alertmanager re-sends every alert of a group every `repeat_interval`, and a payload
//! holds the whole group: a fingerprint already held by an open incident never acts
//! again. A resolved alert leaves its incident; the last one closes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aegis_detectors::Severity;
use serde::Deserialize;

use super::*;

/// Most alerts in one payload (Alertmanager's `max_alerts` is unlimited by default; a
/// group larger than this is a misconfiguration, refused whole rather than half-read).
pub const MAX_ALERTS: usize = 1_000;
/// Most labels (and annotations) on one alert.
pub const MAX_LABELS: usize = 64;
/// Longest label or annotation value, in bytes.
pub const MAX_LABEL_VALUE: usize = 4_096;

/// Alertmanager's webhook payload. Unknown fields are ignored (Alertmanager adds some over
/// versions); `version` must be `"4"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    /// Payload version; `"4"`.
    pub version: String,
    /// The receiver's name in Alertmanager's configuration.
    #[serde(default)]
    pub receiver: String,
    /// `firing` or `resolved`, for the group.
    #[serde(default)]
    pub status: String,
    /// The group's alerts.
    pub alerts: Vec<AmAlert>,
    /// Alertmanager's URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
}

/// One alert of a payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels, `alertname` among them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (`summary`, `description`, …).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// When it ended (the zero time while firing).
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// Alertmanager's identity of the alert (a hash of its labels).
    #[serde(default)]
    pub fingerprint: String,
    /// The rule's expression in Prometheus.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

impl AlertmanagerPayload {
    /// Parses and checks a webhook body; the message says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let mut p: Self = serde_json::from_slice(body)
            .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
        if p.version != "4" {
            return Err(format!(
                "payload version {:?} is not supported (Alertmanager sends \"4\")",
                p.version
            ));
        }
        if p.alerts.len() > MAX_ALERTS {
            return Err(format!(
                "{} alerts in one payload; at most {MAX_ALERTS} (set max_alerts on the receiver)",
                p.alerts.len()
            ));
        }
        for (i, a) in p.alerts.iter_mut().enumerate() {
            if a.status != "firing" && a.status != "resolved" {
                return Err(format!(
                    "alerts[{i}].status is {:?}; expected \"firing\" or \"resolved\"",
                    a.status
                ));
            }
            for (what, map) in [("labels", &a.labels), ("annotations", &a.annotations)] {
                if map.len() > MAX_LABELS {
                    return Err(format!(
                        "alerts[{i}] has {} {what}; at most {MAX_LABELS}",
                        map.len()
                    ));
                }
                if let Some((k, _)) = map
                    .iter()
                    .find(|(k, v)| k.len() > 256 || v.len() > MAX_LABEL_VALUE)
                {
                    return Err(format!(
                        "alerts[{i}].{what}.{} is longer than {MAX_LABEL_VALUE} bytes",
                        truncate(k, 64)
                    ));
                }
            }
            // Other senders may leave it out: the labels are the alert's identity then.
            if a.fingerprint.is_empty() {
                a.fingerprint = a
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
            }
        }
        Ok(p)
    }
}

/// How a rule's matcher compares a label.
#[derive(Debug, Clone)]
enum Op {
    Eq,
    Ne,
    Re(regex::Regex),
    NotRe(regex::Regex),
}

/// `label OP "value"`.
#[derive(Debug, Clone)]
struct Matcher {
    label: String,
    op: Op,
    value: String,
}

impl Matcher {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.label).map_or("", String::as_str);
        match &self.op {
            Op::Eq => v == self.value,
            Op::Ne => v != self.value,
            Op::Re(re) => re.is_match(v),
            Op::NotRe(re) => !re.is_match(v),
        }
    }
}

/// One `alert_actions` rule: `ALERTNAME{label="value",…}=ACTION`, the selector syntax of
/// Prometheus (`=`, `!=`, `=~`, `!~`; regexes anchored); `*` for any alert name.
#[derive(Debug, Clone)]
pub struct AlertRule {
    alertname: String,
    matchers: Vec<Matcher>,
    action: RecommendedAction,
    text: String,
}

impl std::fmt::Display for AlertRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// An action name of `alert_actions` or an `aegis_action` label: the wire names the
/// action already has (`scale_up`, …, `none`).
fn action_named(name: &str) -> Option<RecommendedAction> {
    serde_json::from_value(serde_json::Value::String(name.trim().to_owned())).ok()
}

impl std::str::FromStr for AlertRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (selector, action) = text
            .rsplit_once('=')
            .filter(|(s, _)| !s.ends_with(['!', '=']))
            .ok_or_else(|| format!("`{text}`: expected ALERTNAME{{matchers}}=ACTION"))?;
        let action = action_named(action).ok_or_else(|| {
            format!(
                "`{text}`: unknown action `{}` (scale_up, scale_down, restart_pod, rollback_deployment, none)",
                action.trim()
            )
        })?;
        let selector = selector.trim();
        let (name, rest) = match selector.find('{') {
            Some(i) => (&selector[..i], Some(&selector[i..])),
            None => (selector, None),
        };
        let name = name.trim();
        if name.is_empty()
            || !(name == "*"
                || name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        {
            return Err(format!("`{text}`: `{name}` is not an alert name (or `*`)"));
        }
        let mut matchers = Vec::new();
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| format!("`{text}`: matchers must be inside one {{…}}"))?;
            matchers = parse_matchers(inner).map_err(|e| format!("`{text}`: {e}"))?;
        }
        Ok(Self {
            alertname: name.to_owned(),
            matchers,
            action,
            text: text.to_owned(),
        })
    }
}

/// `a="x", b=~"y"` (values double-quoted; `\"` and `\\` escaped).
fn parse_matchers(inner: &str) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let end = rest
            .find(['=', '!'])
            .ok_or_else(|| format!("`{rest}` has no operator"))?;
        let label = rest[..end].trim().to_owned();
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{label}` is not a label name"));
        }
        let after = &rest[end..];
        let (op, after) = if let Some(a) = after.strip_prefix("=~") {
            ("=~", a)
        } else if let Some(a) = after.strip_prefix("!~") {
            ("!~", a)
        } else if let Some(a) = after.strip_prefix("!=") {
            ("!=", a)
        } else if let Some(a) = after.strip_prefix('=') {
            ("=", a)
        } else {
            return Err(format!("`{label}` has no operator (=, !=, =~, !~)"));
        };
        let after = after
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of `{label}` must be double-quoted"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut closed = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    closed = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let close = closed.ok_or_else(|| format!("the value of `{label}` is not closed"))?;
        let anchored = || {
            regex::Regex::new(&format!("^(?:{value})$"))
                .map_err(|e| format!("the regex of `{label}`: {e}"))
        };
        let op = match op {
            "=" => Op::Eq,
            "!=" => Op::Ne,
            "=~" => Op::Re(anchored()?),
            _ => Op::NotRe(anchored()?),
        };
        out.push(Matcher { label, op, value });
        rest = after[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

impl AlertRule {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        (self.alertname == "*"
            || labels.get("alertname").map(String::as_str) == Some(&self.alertname))
            && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// The action for an alert: the first matching rule, else its `aegis_action` label;
/// `None` when neither names one (and which rule or label decided).
pub fn action_for_alert(
    rules: &[AlertRule],
    labels: &BTreeMap<String, String>,
) -> Option<(RecommendedAction, String)> {
    if let Some(rule) = rules.iter().find(|r| r.matches(labels)) {
        return Some((rule.action, format!("alert_actions rule `{rule}`")));
    }
    let named = labels.get("aegis_action")?;
    action_named(named).map(|a| (a, format!("the alert's label aegis_action=\"{named}\"")))
}

/// Severity of an alert from its `severity` label (Prometheus conventions), and a score
/// inside that level's band.
pub fn alert_severity(labels: &BTreeMap<String, String>) -> (Severity, f64) {
    let label = labels
        .get("severity")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    match label.as_str() {
        "critical" | "page" | "emergency" | "fatal" | "disaster" => (Severity::Critical, 0.9),
        "high" | "error" | "major" => (Severity::High, 0.7),
        "info" | "low" | "minor" | "none" => (Severity::Low, 0.2),
        // `warning` and alerts without a severity.
        _ => (Severity::Medium, 0.45),
    }
}

/// An open alert incident of a workload.
#[derive(Debug, Clone)]
pub(super) struct AlertIncident {
    id: u64,
    fingerprints: BTreeSet<String>,
    actions: Vec<RecommendedAction>,
}

/// Per workload, its open alert incident.
pub(super) type AlertIncidents = HashMap<aegis_engine::Entity, AlertIncident>;

/// What became of one alert of a payload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertOutcome {
    /// Alertmanager's fingerprint.
    pub fingerprint: String,
    /// The `alertname` label.
    pub alertname: String,
    /// `namespace/workload`, when the labels name one.
    pub entity: Option<String>,
    /// `acted` (put to the policy engine), `duplicate` (its incident has it already),
    /// `resolved`, `no_workload`, `unmapped` (no rule or label names an action).
    pub result: &'static str,
    /// The incident it belongs to.
    pub incident: Option<u64>,
    /// What happened when it was acted on.
    pub event: Option<LoopEvent>,
}

/// Every `result` an alert can have, for the metric's zero values.
pub const ALERT_RESULTS: [&str; 5] = ["acted", "duplicate", "resolved", "no_workload", "unmapped"];

impl HealingLoop {
    /// Takes an Alertmanager payload: each alert opens, joins or leaves its workload's
    /// incident; new ones are decided and acted on like the engine's detections.
    pub async fn on_alerts(&self, payload: &AlertmanagerPayload) -> Vec<AlertOutcome> {
        let started = Instant::now();
        let mut out = Vec::with_capacity(payload.alerts.len());
        let mut history = Vec::new();
        for alert in &payload.alerts {
            let alertname = alert.labels.get("alertname").cloned().unwrap_or_default();
            let pairs: Vec<(String, String)> = alert
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let entity = aegis_engine::resolve_entity(&pairs);
            let mut outcome = AlertOutcome {
                fingerprint: alert.fingerprint.clone(),
                alertname: alertname.clone(),
                entity: entity.as_ref().map(ToString::to_string),
                result: "no_workload",
                incident: None,
                event: None,
            };
            let (severity, score) = alert_severity(&alert.labels);
            let action = action_for_alert(&self.settings.alert_rules, &alert.labels);
            if let Some(entity) = entity {
                self.one_alert(
                    alert,
                    &entity,
                    (severity, score),
                    action,
                    &mut outcome,
                    started,
                )
                .await;
            }
            metrics::counter!(aegis_core::metric_names::ALERTS_TOTAL, "result" => outcome.result)
                .increment(1);
            tracing::info!(
                alertname = %outcome.alertname,
                fingerprint = %outcome.fingerprint,
                entity = outcome.entity.as_deref().unwrap_or("-"),
                status = %alert.status,
                result = outcome.result,
                receiver = %payload.receiver,
                "alert received"
            );
            if alert.status == "firing"
                && outcome.result != "duplicate"
                && self.first_sight(&outcome)
            {
                history.push(self.alert_prediction(alert, &outcome, severity, score));
            }
            out.push(outcome);
        }
        if !history.is_empty()
            && let Err(error) = self.detectors.record(&history).await
        {
            tracing::warn!(%error, "recording received alerts failed");
        }
        out
    }

    /// One alert of a workload.
    async fn one_alert(
        &self,
        alert: &AmAlert,
        entity: &aegis_engine::Entity,
        (severity, score): (Severity, f64),
        action: Option<(RecommendedAction, String)>,
        outcome: &mut AlertOutcome,
        started: Instant,
    ) {
        let firing = alert.status == "firing";
        // The bookkeeping under the lock, before any await: a second delivery of the same
        // alert racing this one sees it held and never acts twice.
        let decided = {
            let mut open = self
                .alert_incidents
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !firing {
                outcome.result = "resolved";
                if let Some(inc) = open.get_mut(entity) {
                    outcome.incident = Some(inc.id);
                    inc.fingerprints.remove(&alert.fingerprint);
                    if inc.fingerprints.is_empty() {
                        open.remove(entity);
                        self.counters
                            .alert_incidents_closed
                            .fetch_add(1, Ordering::Relaxed);
                        // The verification of an action it led to reads this: calm.
                        self.note_verification_score(entity, 0.0);
                        tracing::info!(%entity, "alert incident closed: its alerts resolved");
                    }
                }
                return;
            }
            if let Some(inc) = open.get(entity)
                && inc.fingerprints.contains(&alert.fingerprint)
            {
                outcome.result = "duplicate";
                outcome.incident = Some(inc.id);
                // Still firing: what a pending verification reads.
                self.note_verification_score(entity, score);
                return;
            }
            let Some((rec, why)) = action.filter(|(a, _)| *a != RecommendedAction::None) else {
                outcome.result = "unmapped";
                return;
            };
            let opened = !open.contains_key(entity);
            if opened {
                let id = self.engine().allocate_incident();
                open.insert(
                    entity.clone(),
                    AlertIncident {
                        id,
                        fingerprints: BTreeSet::new(),
                        actions: Vec::new(),
                    },
                );
            }
            let Some(inc) = open.get_mut(entity) else {
                return;
            };
            inc.fingerprints.insert(alert.fingerprint.clone());
            outcome.incident = Some(inc.id);
            if inc.actions.contains(&rec) {
                // Another alert of the same incident asking for what was asked already.
                outcome.result = "duplicate";
                return;
            }
            inc.actions.push(rec);
            (inc.id, opened, rec, why)
        };
        let (incident, opened, rec, why) = decided;
        outcome.result = "acted";
        let name = outcome.alertname.clone();
        let summary = alert
            .annotations
            .get("summary")
            .or_else(|| alert.annotations.get("description"))
            .map(|s| format!(": {}", truncate(s, 300)))
            .unwrap_or_default();
        let detection = Detection {
            entity: entity.clone(),
            incident,
            score,
            row: 0,
            features: Vec::new(),
            logs: Default::default(),
            at_ms: Utc::now().timestamp_millis(),
            opened,
        };
        let result = RowResult {
            alert: Some(json!({
                "source": "alertmanager",
                "alertname": name,
                "fingerprint": alert.fingerprint,
                "labels": alert.labels,
                "annotations": alert.annotations,
                "starts_at": alert.starts_at,
                "generator_url": alert.generator_url,
                "action_from": why,
            })),
            ..RowResult::default()
        };
        let assessment = Assessment {
            severity,
            severity_score: score,
            recommendation: aegis_detectors::Recommendation {
                action: rec,
                confidence: 1.0,
                explanation: format!(
                    "Alertmanager alert {name} is firing on {entity}{summary} ({why} asks for {})",
                    rec.as_str()
                ),
            },
            contributions: Vec::new(),
        };
        {
            let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            asked.insert(entity.clone(), (incident, vec![rec]));
        }
        if opened {
            self.counters.detections.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(aegis_core::metric_names::DETECTIONS_TOTAL,
                "detector" => "alertmanager", "severity" => severity.as_str())
            .increment(1);
        }
        let span = tracing::info_span!(
            "alert.decide",
            entity = %entity,
            incident,
            alertname = %outcome.alertname,
            action = rec.as_str(),
        );
        let event = self
            .decide_and_act(&(detection, result, assessment), None, started)
            .instrument(span)
            .await;
        let _ = self.events.send(event.clone());
        outcome.event = Some(event);
    }

    /// Whether an alert that acts on nothing (no workload, no action) is new: Alertmanager
    /// repeats it every `repeat_interval`, and the history keeps it once an hour.
    fn first_sight(&self, outcome: &AlertOutcome) -> bool {
        if outcome.result == "acted" {
            return true;
        }
        let now = Instant::now();
        let mut seen = self.alerts_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= 10_000 {
            seen.retain(|_, at| now.duration_since(*at) < Duration::from_secs(3_600));
        }
        if seen
            .get(&outcome.fingerprint)
            .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(3_600))
        {
            return false;
        }
        // Past the bound (10,000 alerts of the last hour) they are all recorded: a flood
        // is worth seeing, and memory stays bounded.
        if seen.len() < 10_000 || seen.contains_key(&outcome.fingerprint) {
            seen.insert(outcome.fingerprint.clone(), now);
        }
        true
    }

    /// A received alert in the prediction history (detector `alertmanager`).
    fn alert_prediction(
        &self,
        alert: &AmAlert,
        outcome: &AlertOutcome,
        severity: Severity,
        score: f64,
    ) -> NewPrediction {
        let event = outcome.event.as_ref();
        NewPrediction {
            detector: "alertmanager".to_owned(),
            entity: outcome.entity.clone().unwrap_or_else(|| "-".to_owned()),
            model_version: "alertmanager-webhook-v4".to_owned(),
            score,
            is_anomaly: true,
            severity: severity.as_str().to_owned(),
            failure_type: None,
            recommended_action: event
                .map_or("none", |e| e.recommended_action.as_str())
                .to_owned(),
            confidence: 1.0,
            latency_us: 0,
            features: "{}".to_owned(),
            details: json!({
                "alertname": outcome.alertname,
                "fingerprint": alert.fingerprint,
                "labels": alert.labels,
                "annotations": alert.annotations,
                "result": outcome.result,
                "incident": outcome.incident,
                "event": event,
            })
            .to_string(),
        }
    }

    /// Open alert incidents.
    pub fn open_alert_incidents(&self) -> usize {
        self.alert_incidents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn rules_match_like_prometheus_selectors() {
        let rules: Vec<AlertRule> = [
            r#"QueueBacklog{severity=~"critical|page", team!="batch"}=scale_up"#,
            r#"PodCrashLooping=rollback_deployment"#,
            r#"*{aegis_action="none"}=none"#,
            r#"*{namespace!~"prod.*"}=none"#,
        ]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
        let action = |l: &[(&str, &str)]| action_for_alert(&rules, &labels(l)).map(|(a, _)| a);
        let backlog = [("alertname", "QueueBacklog"), ("namespace", "production")];
        assert_eq!(
            action(&[backlog[0], backlog[1], ("severity", "page")]),
            Some(RecommendedAction::ScaleUp)
        );
        // Anchored: `critical-ish` is not `critical`.
        assert_eq!(
            action(&[backlog[0], backlog[1], ("severity", "critical-ish")]),
            None
        );
        assert_eq!(
            action(&[
                backlog[0],
                backlog[1],
                ("severity", "critical"),
                ("team", "batch")
            ]),
            None
        );
        assert_eq!(
            action(&[
                ("alertname", "PodCrashLooping"),
                ("namespace", "production")
            ]),
            Some(RecommendedAction::RollbackDeployment)
        );
        assert_eq!(
            action(&[("alertname", "X"), ("namespace", "staging")]),
            Some(RecommendedAction::None)
        );
        // No rule: the alert's own label, when it names an action.
        assert_eq!(
            action(&[
                ("alertname", "X"),
                ("namespace", "production"),
                ("aegis_action", "restart_pod")
            ]),
            Some(RecommendedAction::RestartPod)
        );
        assert_eq!(
            action(&[
                ("alertname", "X"),
                ("namespace", "production"),
                ("aegis_action", "reboot")
            ]),
            None
        );
        // Escaped quotes and a `=` inside a value.
        let r: AlertRule = r#"A{msg="say \"hi\" a=b"}=scale_up"#.parse().unwrap();
        assert!(r.matches(&labels(&[("alertname", "A"), ("msg", "say \"hi\" a=b")])));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, says) in [
            ("QueueBacklog", "expected"),
            ("QueueBacklog=reboot", "unknown action"),
            ("Queue Backlog=scale_up", "not an alert name"),
            (r#"A{severity=critical}=scale_up"#, "double-quoted"),
            (r#"A{severity="critical}=scale_up"#, "not closed"),
            (r#"A{severity=~"("}=scale_up"#, "regex"),
            (r#"A{sev-erity="x"}=scale_up"#, "label name"),
            (r#"A{severity="x""#, "unknown action"),
        ] {
            let e = rule.parse::<AlertRule>().unwrap_err();
            assert!(e.contains(says), "{rule}: {e}");
        }
    }

    #[test]
    fn severity_follows_the_label() {
        assert_eq!(
            alert_severity(&labels(&[("severity", "CRITICAL")])).0,
            Severity::Critical
        );
        assert_eq!(
            alert_severity(&labels(&[("severity", "error")])).0,
            Severity::High
        );
        assert_eq!(
            alert_severity(&labels(&[("severity", "warning")])).0,
            Severity::Medium
        );
        assert_eq!(alert_severity(&labels(&[])).0, Severity::Medium);
        assert_eq!(
            alert_severity(&labels(&[("severity", "info")])).0,
            Severity::Low
        );
    }

    #[test]
    fn payloads_are_checked() {
        let ok = br#"{"version":"4","receiver":"aegis","status":"firing","alerts":[
            {"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-12-05T03:00:00Z",
             "endsAt":"0001-01-01T00:00:00Z"}],"groupKey":"k","truncatedAlerts":0}"#;
        let p = AlertmanagerPayload::parse(ok).unwrap();
        assert_eq!(
            p.alerts[0].fingerprint, "alertname=A",
            "labels stand in for it"
        );
        assert!(
            AlertmanagerPayload::parse(br#"{"version":"4","alerts":[{"status":"x"}]}"#).is_err()
        );
        assert!(AlertmanagerPayload::parse(br#"{"version":"2","alerts":[]}"#).is_err());
    }
}
