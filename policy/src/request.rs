//! What is asked ([`Request`]) and the semantics of single conditions, shared by the compiled
//! evaluator and the reference evaluator so both mean exactly the same thing.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{MetaCondition, Op, PolicyType, Scalar, TimeWindow};

/// One question for the policy engine: may this caller do `action` on `resource`?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The action, e.g. `scale_up` or `GET /api/v1/users`.
    pub action: String,
    /// The resource, e.g. `cluster:production`.
    pub resource: String,
    /// `self_healing` or `api_access`.
    #[serde(rename = "type", alias = "policy_type", alias = "policyType")]
    pub policy_type: PolicyType,
    /// Who asks, and anything conditions may look at.
    #[serde(default)]
    pub context: Context,
}

/// The caller and the circumstances of a [`Request`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The caller's id.
    #[serde(default, alias = "userId", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The caller's role (for callers with one role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The caller's roles (for callers with several).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Facts conditions can test: severity, namespace, replicas, ...
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// For what-if questions only: the time to evaluate at. Enforcement uses the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
}

impl Context {
    /// True when the caller has `role`.
    #[inline]
    pub fn has_role(&self, role: &str) -> bool {
        self.role.as_deref() == Some(role) || self.roles.iter().any(|r| r == role)
    }
}

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionError {
    /// A numeric operator met a value that is not a number.
    NotANumber,
}

/// Finds `key` in `metadata`: the key itself first, then, when it has dots, the path through
/// nested objects (`labels.team`).
#[inline]
pub(crate) fn lookup<'a>(metadata: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = metadata.get(key) {
        return Some(v);
    }
    if !key.contains('.') {
        return None;
    }
    let mut parts = key.split('.');
    let mut current = metadata.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// Equality between a request value and a policy literal: numbers as numbers (a numeric
/// string equals the number it spells), strings as strings, booleans as booleans or their
/// spelling.
fn scalar_eq(value: &Value, scalar: &Scalar) -> bool {
    match (value, scalar) {
        (Value::String(s), Scalar::Str(t)) => s == t,
        (Value::Bool(b), Scalar::Bool(c)) => b == c,
        (Value::Number(_), Scalar::Num(n)) | (Value::String(_), Scalar::Num(n)) => {
            as_number(value) == Some(*n)
        }
        (Value::Number(m), Scalar::Str(t)) => {
            m.as_f64().is_some() && t.trim().parse::<f64>().ok() == m.as_f64()
        }
        (Value::Bool(b), Scalar::Str(t)) => t == if *b { "true" } else { "false" },
        (Value::String(s), Scalar::Bool(c)) => s == if *c { "true" } else { "false" },
        _ => false,
    }
}

impl Op {
    /// Does this operator hold for `value` (`None` when the key is absent)? Absent and null
    /// values satisfy only `ne`, `not_in` and `exists: false`.
    pub fn holds(&self, value: Option<&Value>) -> Result<bool, ConditionError> {
        let value = value.filter(|v| !v.is_null());
        let Some(value) = value else {
            return Ok(matches!(self, Op::Ne(_) | Op::NotIn(_) | Op::Exists(false)));
        };
        let number = || as_number(value).ok_or(ConditionError::NotANumber);
        Ok(match self {
            Op::Eq(s) => scalar_eq(value, s),
            Op::Ne(s) => !scalar_eq(value, s),
            Op::In(list) => list.iter().any(|s| scalar_eq(value, s)),
            Op::NotIn(list) => !list.iter().any(|s| scalar_eq(value, s)),
            Op::Gt(n) => number()? > *n,
            Op::Gte(n) => number()? >= *n,
            Op::Lt(n) => number()? < *n,
            Op::Lte(n) => number()? <= *n,
            Op::Matches(re) => value.as_str().is_some_and(|s| re.0.is_match(s)),
            Op::Exists(want) => *want,
        })
    }
}

impl MetaCondition {
    /// All operators hold for `value`, checked in order, stopping at the first that does not.
    pub fn holds(&self, value: Option<&Value>) -> Result<bool, ConditionError> {
        for op in &self.0 {
            if !op.holds(value)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl TimeWindow {
    /// True when `at` falls in the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.timezone.0);
        let minute = (local.hour() * 60 + local.minute()) as u16;
        let today = local.weekday().num_days_from_monday() as u8;
        let (start, end) = (self.start.minutes(), self.end.minutes());
        let day = if start < end {
            if minute < start || minute >= end {
                return false;
            }
            today
        } else if minute >= start {
            today
        } else if minute < end {
            // The early-morning part of a window that opened yesterday.
            (today + 6) % 7
        } else {
            return false;
        };
        self.days.is_empty() || self.days.iter().any(|d| d.index() == day)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn window(v: Value) -> TimeWindow {
        serde_json::from_value(v).unwrap()
    }

    fn cond(v: Value) -> MetaCondition {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn window_in_a_timezone() {
        let w = window(
            json!({"days": ["mon","tue","wed","thu","fri"], "start": "09:00",
            "end": "17:00", "timezone": "Europe/Berlin"}),
        );
        // Tuesday 2026-11-24 08:30 UTC is 09:30 in Berlin (CET, UTC+1).
        assert!(w.contains(Utc.with_ymd_and_hms(2026, 11, 24, 8, 30, 0).unwrap()));
        // 07:59 UTC is 08:59 in Berlin.
        assert!(!w.contains(Utc.with_ymd_and_hms(2026, 11, 24, 7, 59, 0).unwrap()));
        // 16:00 UTC is 17:00 in Berlin: the end is exclusive.
        assert!(!w.contains(Utc.with_ymd_and_hms(2026, 11, 24, 16, 0, 0).unwrap()));
        // Saturday.
        assert!(!w.contains(Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()));
        // Summer time: 2026-07-01 07:30 UTC is 09:30 CEST.
        assert!(w.contains(Utc.with_ymd_and_hms(2026, 7, 1, 7, 30, 0).unwrap()));
    }

    #[test]
    fn window_crossing_midnight_belongs_to_its_start_day() {
        let w = window(json!({"days": ["fri"], "start": "22:00", "end": "06:00"}));
        // Friday 2026-11-27 23:00 and Saturday 02:00 are in; Friday 02:00 and Saturday 23:00 are not.
        assert!(w.contains(Utc.with_ymd_and_hms(2026, 11, 27, 23, 0, 0).unwrap()));
        assert!(w.contains(Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap()));
        assert!(!w.contains(Utc.with_ymd_and_hms(2026, 11, 27, 2, 0, 0).unwrap()));
        assert!(!w.contains(Utc.with_ymd_and_hms(2026, 11, 28, 23, 0, 0).unwrap()));
        assert!(!w.contains(Utc.with_ymd_and_hms(2026, 11, 28, 6, 0, 0).unwrap()));
    }

    #[test]
    fn operators() {
        let v = json!({"severity": "high", "replicas": 7, "text_num": "12", "flag": true,
            "labels": {"team": "sre"}, "nothing": null});
        let m = v.as_object().unwrap();
        let check = |key: &str, c: Value| cond(c).holds(lookup(m, key));
        assert_eq!(
            check("severity", json!({"in": ["high", "critical"]})),
            Ok(true)
        );
        assert_eq!(check("severity", json!({"not_in": ["high"]})), Ok(false));
        assert_eq!(check("severity", json!("high")), Ok(true));
        assert_eq!(check("replicas", json!({"lte": 10, "gt": 6})), Ok(true));
        assert_eq!(check("replicas", json!({"eq": "7"})), Ok(true));
        assert_eq!(check("text_num", json!({"gte": 12})), Ok(true));
        assert_eq!(check("text_num", json!({"eq": 12.0})), Ok(true));
        assert_eq!(check("flag", json!({"eq": true})), Ok(true));
        assert_eq!(check("labels.team", json!({"eq": "sre"})), Ok(true));
        assert_eq!(check("labels.team", json!({"matches": "^s.e$"})), Ok(true));
        assert_eq!(
            check("severity", json!({"gt": 1})),
            Err(ConditionError::NotANumber)
        );
        assert_eq!(check("missing", json!({"gt": 1})), Ok(false));
        assert_eq!(check("missing", json!({"ne": "x"})), Ok(true));
        assert_eq!(check("missing", json!({"not_in": ["x"]})), Ok(true));
        assert_eq!(check("missing", json!({"exists": false})), Ok(true));
        assert_eq!(check("nothing", json!({"exists": true})), Ok(false));
        assert_eq!(check("severity", json!({"exists": true})), Ok(true));
        assert_eq!(check("replicas", json!({"matches": "7"})), Ok(false));
    }
}
