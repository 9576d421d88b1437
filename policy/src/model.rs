//! The policy document of CONTRACT.md ("Policy"), validated while it is read.
//!
//! Every check that can be made on one field happens in that field's `TryFrom`, so a YAML or
//! JSON parser reports the bad value at its own line and column: unknown fields, a bad regex,
//! an unknown timezone, a window whose start equals its end, an empty action list.
//!
//! Long because it is the whole policy document of CONTRACT.md with its validation beside
//! each field, so one file answers what a policy may say.

use std::collections::BTreeMap;
use std::fmt;

use chrono_tz::Tz;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted action, resource or role pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 512;
/// Largest compiled size of a `matches` regex, in bytes (the `regex` crate's own unit).
pub const MAX_REGEX_SIZE: usize = 1 << 20;

/// What a policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    /// Remediations the engine wants to run (scale, restart, rollback).
    #[serde(alias = "selfHealing", alias = "SELF_HEALING")]
    SelfHealing,
    /// Calls to the HTTP API.
    #[serde(alias = "apiAccess", alias = "API_ACCESS")]
    ApiAccess,
}

impl PolicyType {
    /// Both types, in index order.
    pub const ALL: [PolicyType; 2] = [PolicyType::SelfHealing, PolicyType::ApiAccess];

    /// The wire name: `self_healing` or `api_access`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelfHealing => "self_healing",
            Self::ApiAccess => "api_access",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::SelfHealing => 0,
            Self::ApiAccess => 1,
        }
    }
}

impl fmt::Display for PolicyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "self_healing" | "selfHealing" => Ok(Self::SelfHealing),
            "api_access" | "apiAccess" => Ok(Self::ApiAccess),
            other => Err(format!(
                "unknown policy type `{other}` (expected `self_healing` or `api_access`)"
            )),
        }
    }
}

/// What a matching policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The request may proceed.
    #[serde(alias = "ALLOW", alias = "Allow")]
    Allow,
    /// The request is refused.
    #[serde(alias = "DENY", alias = "Deny")]
    Deny,
}

impl Effect {
    /// The decision's wire name: `ALLOW` or `DENY`.
    pub fn as_decision(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
        }
    }

    /// The policy field's spelling: `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_decision())
    }
}

/// One policy as written by its author.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// A unique, human-readable name.
    pub name: String,
    /// What the policy is for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `self_healing` or `api_access`.
    #[serde(rename = "type", alias = "policy_type", alias = "policyType")]
    pub policy_type: PolicyType,
    /// `allow` or `deny`.
    pub effect: Effect,
    /// Higher is considered first.
    #[serde(default)]
    pub priority: i32,
    /// Action patterns (`*` matches any run of characters); at least one.
    pub actions: Actions,
    /// Resource patterns; `["*"]` when left out.
    #[serde(default = "any_resource")]
    pub resources: Vec<Pattern>,
    /// Further conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
    /// Disabled policies are kept but never match.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// An ALLOW that needs a person's approval before the action is carried out:
    /// `true`, or `{min_severity: high}` for detections at or above a severity. Ignored on
    /// DENY policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<ApprovalRule>,
}

/// When an ALLOW waits for an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApprovalRule {
    /// `true`: always; `false`: never.
    Always(bool),
    /// At or above this severity (request metadata `severity`).
    AtLeast {
        /// The lowest severity that needs approval.
        min_severity: SeverityLevel,
    },
}

/// Detection severities, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeverityLevel {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl ApprovalRule {
    /// Whether a request with `metadata` needs approval under this rule. A request whose
    /// severity is missing or unknown needs it (fail closed).
    pub fn applies(&self, metadata: &serde_json::Map<String, Value>) -> bool {
        match self {
            Self::Always(b) => *b,
            Self::AtLeast { min_severity } => {
                let level = metadata
                    .get("severity")
                    .and_then(Value::as_str)
                    .and_then(|s| {
                        serde_json::from_value::<SeverityLevel>(Value::String(s.to_lowercase()))
                            .ok()
                    });
                level.is_none_or(|l| l >= *min_severity)
            }
        }
    }
}

fn any_resource() -> Vec<Pattern> {
    vec![Pattern("*".to_owned())]
}

fn yes() -> bool {
    true
}

impl PolicySpec {
    /// Parses one policy from JSON, with the same validation as files.
    pub fn from_json(value: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// True when the policy has no roles, time or metadata condition.
    pub fn is_unconditional(&self) -> bool {
        self.conditions.is_empty()
    }
}

/// A glob pattern: `*` matches any run of characters (including none); everything else is
/// literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern(String);

impl Pattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `*`: anything.
    pub fn any() -> Self {
        Self("*".to_owned())
    }

    /// True when the pattern has no wildcard.
    pub fn is_literal(&self) -> bool {
        !self.0.contains('*')
    }
}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.is_empty() {
            return Err("a pattern must not be empty (use `*` to match anything)".to_owned());
        }
        if value.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "a pattern may be at most {MAX_PATTERN_LEN} bytes, this one has {}",
                value.len()
            ));
        }
        Ok(Self(value))
    }
}

impl From<Pattern> for String {
    fn from(value: Pattern) -> Self {
        value.0
    }
}

/// A non-empty list of action patterns.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "Vec<Pattern>")]
pub struct Actions(Vec<Pattern>);

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Actions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of action patterns")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Actions, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Pattern>()? {
                    items.push(item);
                }
                // Checked here, inside the sequence, so the parser reports its position.
                Actions::try_from(items).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

impl Actions {
    /// The patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.0
    }
}

impl TryFrom<Vec<Pattern>> for Actions {
    type Error = String;
    fn try_from(value: Vec<Pattern>) -> Result<Self, Self::Error> {
        if value.is_empty() {
            return Err("`actions` must name at least one action (use `*` for any)".to_owned());
        }
        Ok(Self(value))
    }
}

impl From<Actions> for Vec<Pattern> {
    fn from(value: Actions) -> Self {
        value.0
    }
}

/// Conditions beyond type, action and resource; all present ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// The caller must have one of these roles; any role when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The evaluation time must fall in this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeWindow>,
    /// Conditions on request metadata, by key (`a.b` reaches into nested objects).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, MetaCondition>,
}

impl Conditions {
    /// True when no condition is set.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.time.is_none() && self.metadata.is_empty()
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs, reason = "the days of the week need no explanation")]
pub enum Day {
    #[serde(alias = "monday", alias = "Mon", alias = "Monday")]
    Mon,
    #[serde(alias = "tuesday", alias = "Tue", alias = "Tuesday")]
    Tue,
    #[serde(alias = "wednesday", alias = "Wed", alias = "Wednesday")]
    Wed,
    #[serde(alias = "thursday", alias = "Thu", alias = "Thursday")]
    Thu,
    #[serde(alias = "friday", alias = "Fri", alias = "Friday")]
    Fri,
    #[serde(alias = "saturday", alias = "Sat", alias = "Saturday")]
    Sat,
    #[serde(alias = "sunday", alias = "Sun", alias = "Sunday")]
    Sun,
}

impl Day {
    /// Monday is 0.
    pub fn index(self) -> u8 {
        match self {
            Self::Mon => 0,
            Self::Tue => 1,
            Self::Wed => 2,
            Self::Thu => 3,
            Self::Fri => 4,
            Self::Sat => 5,
            Self::Sun => 6,
        }
    }
}

/// A time of day, `HH:MM`, as minutes after midnight; `24:00` is allowed as an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// Minutes after midnight, 0..=1440.
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let bad = || format!("`{value}` is not a time of day; write `HH:MM`, e.g. `09:30`");
        let (h, m) = value.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if (h == 24 && m == 0) || (h < 24 && m < 60) {
            Ok(Self(h * 60 + m))
        } else {
            Err(bad())
        }
    }
}

impl From<TimeOfDay> for String {
    fn from(value: TimeOfDay) -> Self {
        format!("{:02}:{:02}", value.0 / 60, value.0 % 60)
    }
}

/// An IANA timezone name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timezone(pub Tz);

impl TryFrom<String> for Timezone {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse::<Tz>().map(Self).map_err(|_| {
            format!("unknown timezone `{value}`; use an IANA name such as `Europe/Berlin` or `UTC`")
        })
    }
}

impl From<Timezone> for String {
    fn from(value: Timezone) -> Self {
        value.0.name().to_owned()
    }
}

impl Default for Timezone {
    fn default() -> Self {
        Self(Tz::UTC)
    }
}

/// A weekly time window. When `start` is later than `end` the window crosses midnight and
/// its early-morning part belongs to the day it started on (`fri 22:00-06:00` holds on
/// Saturday at 02:00).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTimeWindow", into = "RawTimeWindow")]
pub struct TimeWindow {
    /// Days the window opens on; every day when empty.
    pub days: Vec<Day>,
    /// Opening time (inclusive).
    pub start: TimeOfDay,
    /// Closing time (exclusive).
    pub end: TimeOfDay,
    /// The timezone `start` and `end` are in.
    pub timezone: Timezone,
}

/// The time window as written, before the cross-field check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeWindow {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    days: Vec<Day>,
    start: TimeOfDay,
    end: TimeOfDay,
    #[serde(default, alias = "tz")]
    timezone: Timezone,
}

impl TryFrom<RawTimeWindow> for TimeWindow {
    type Error = String;
    fn try_from(raw: RawTimeWindow) -> Result<Self, Self::Error> {
        if raw.start.minutes() % 1440 == raw.end.minutes() % 1440 {
            return Err(format!(
                "time window start and end are both `{}`; an empty or full-day window is \
                 ambiguous: leave `time` out for always, or give a real range",
                String::from(raw.start)
            ));
        }
        Ok(Self {
            days: raw.days,
            start: raw.start,
            end: raw.end,
            timezone: raw.timezone,
        })
    }
}

impl From<TimeWindow> for RawTimeWindow {
    fn from(w: TimeWindow) -> Self {
        Self {
            days: w.days,
            start: w.start,
            end: w.end,
            timezone: w.timezone,
        }
    }
}

/// A literal in a metadata condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    fn from_json(value: &Value, op: &str) -> Result<Self, String> {
        match value {
            Value::String(s) => Ok(Self::Str(s.clone())),
            Value::Bool(b) => Ok(Self::Bool(*b)),
            Value::Number(n) => n
                .as_f64()
                .map(Self::Num)
                .ok_or_else(|| format!("`{op}`: number `{n}` is out of range")),
            other => Err(format!(
                "`{op}` needs a string, number or boolean, not `{other}`"
            )),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Str(s) => Value::String(s.clone()),
            Self::Num(n) => number_json(*n),
            Self::Bool(b) => Value::Bool(*b),
        }
    }
}

fn number_json(n: f64) -> Value {
    // Whole numbers print as integers so that `lte: 10` round-trips as written.
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// A regex for `matches`, compiled once when the policy is read.
#[derive(Debug, Clone)]
pub struct MatchRegex(pub Regex);

impl PartialEq for MatchRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// One operator of a metadata condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Equal (numbers compare as numbers).
    Eq(Scalar),
    /// Not equal; holds when the key is absent.
    Ne(Scalar),
    /// Equal to one of.
    In(Vec<Scalar>),
    /// Equal to none of; holds when the key is absent.
    NotIn(Vec<Scalar>),
    /// Greater than.
    Gt(f64),
    /// Greater than or equal.
    Gte(f64),
    /// Less than.
    Lt(f64),
    /// Less than or equal.
    Lte(f64),
    /// The string value matches the regex (unanchored; use `^…$` to anchor).
    Matches(MatchRegex),
    /// The key is present and not null (`true`), or absent or null (`false`).
    Exists(bool),
}

/// The operators, as written.
pub const OPERATORS: [&str; 10] = [
    "eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "matches", "exists",
];

impl Op {
    /// The operator's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Eq(_) => "eq",
            Self::Ne(_) => "ne",
            Self::In(_) => "in",
            Self::NotIn(_) => "not_in",
            Self::Gt(_) => "gt",
            Self::Gte(_) => "gte",
            Self::Lt(_) => "lt",
            Self::Lte(_) => "lte",
            Self::Matches(_) => "matches",
            Self::Exists(_) => "exists",
        }
    }

    fn parse(name: &str, operand: &Value) -> Result<Self, String> {
        let number = |v: &Value| -> Result<f64, String> {
            match v {
                Value::Number(n) => n
                    .as_f64()
                    .ok_or_else(|| format!("`{name}`: number `{n}` is out of range")),
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| format!("`{name}` needs a number, not `\"{s}\"`")),
                other => Err(format!("`{name}` needs a number, not `{other}`")),
            }
        };
        let list = |v: &Value| -> Result<Vec<Scalar>, String> {
            match v {
                Value::Array(items) => items.iter().map(|i| Scalar::from_json(i, name)).collect(),
                other => Err(format!("`{name}` needs a list, not `{other}`")),
            }
        };
        Ok(match name {
            "eq" => Self::Eq(Scalar::from_json(operand, name)?),
            "ne" => Self::Ne(Scalar::from_json(operand, name)?),
            "in" => Self::In(list(operand)?),
            "not_in" => Self::NotIn(list(operand)?),
            "gt" => Self::Gt(number(operand)?),
            "gte" => Self::Gte(number(operand)?),
            "lt" => Self::Lt(number(operand)?),
            "lte" => Self::Lte(number(operand)?),
            "matches" => {
                let Value::String(source) = operand else {
                    return Err(format!("`matches` needs a regex string, not `{operand}`"));
                };
                let regex = regex::RegexBuilder::new(source)
                    .size_limit(MAX_REGEX_SIZE)
                    .build()
                    .map_err(|e| format!("`matches`: invalid regex `{source}`: {e}"))?;
                Self::Matches(MatchRegex(regex))
            }
            "exists" => match operand {
                Value::Bool(b) => Self::Exists(*b),
                other => Err(format!("`exists` needs true or false, not `{other}`"))?,
            },
            other => {
                return Err(format!(
                    "unknown operator `{other}`; expected one of {}",
                    OPERATORS.join(", ")
                ));
            }
        })
    }

    fn operand_json(&self) -> Value {
        match self {
            Self::Eq(s) | Self::Ne(s) => s.to_json(),
            Self::In(l) | Self::NotIn(l) => Value::Array(l.iter().map(Scalar::to_json).collect()),
            Self::Gt(n) | Self::Gte(n) | Self::Lt(n) | Self::Lte(n) => number_json(*n),
            Self::Matches(r) => Value::String(r.0.as_str().to_owned()),
            Self::Exists(b) => Value::Bool(*b),
        }
    }
}

/// The operators on one metadata key; all must hold. A bare value is shorthand for `eq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct MetaCondition(pub Vec<Op>);

impl TryFrom<Value> for MetaCondition {
    type Error = String;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        match value {
            Value::Object(map) => {
                if map.is_empty() {
                    return Err(format!(
                        "a metadata condition needs an operator: one of {}",
                        OPERATORS.join(", ")
                    ));
                }
                map.iter()
                    .map(|(name, operand)| Op::parse(name, operand))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Self)
            }
            scalar => Ok(Self(vec![Op::Eq(Scalar::from_json(&scalar, "eq")?)])),
        }
    }
}

impl From<MetaCondition> for Value {
    fn from(c: MetaCondition) -> Self {
        Value::Object(
            c.0.iter()
                .map(|op| (op.name().to_owned(), op.operand_json()))
                .collect(),
        )
    }
}
