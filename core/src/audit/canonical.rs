//! Canonical row encoding for the audit hash chain.

use chrono::{DateTime, SecondsFormat, Utc};

/// Builds the canonical bytes of one audit row: a compact JSON object whose fields appear
/// in the order the caller adds them.
///
/// The encoding only uses values that survive a round trip through SQLite and PostgreSQL
/// unchanged (strings, integers, booleans, timestamps at microsecond precision), so the
/// hash computed at insert time can be recomputed from the stored row by `audit verify`.
#[derive(Debug, Default)]
pub struct Canonical {
    buf: String,
}

impl Canonical {
    /// Starts an empty row.
    pub fn new() -> Self {
        Self {
            buf: String::with_capacity(256),
        }
    }

    fn key(&mut self, name: &str) {
        self.buf.push(if self.buf.is_empty() { '{' } else { ',' });
        push_json_string(&mut self.buf, name);
        self.buf.push(':');
    }

    /// Adds a string field.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.key(name);
        push_json_string(&mut self.buf, value);
        self
    }

    /// Adds an optional string field (`null` when absent).
    pub fn opt_str(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(name, v),
            None => {
                self.key(name);
                self.buf.push_str("null");
                self
            }
        }
    }

    /// Adds an integer field.
    pub fn i64(&mut self, name: &str, value: i64) -> &mut Self {
        self.key(name);
        self.buf.push_str(&value.to_string());
        self
    }

    /// Adds an optional integer field (`null` when absent).
    pub fn opt_i64(&mut self, name: &str, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.i64(name, v),
            None => {
                self.key(name);
                self.buf.push_str("null");
                self
            }
        }
    }

    /// Adds a boolean field.
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.key(name);
        self.buf.push_str(if value { "true" } else { "false" });
        self
    }

    /// Adds a timestamp as RFC 3339 in UTC with microseconds, the precision both databases
    /// keep.
    pub fn time(&mut self, name: &str, value: DateTime<Utc>) -> &mut Self {
        let text = value.to_rfc3339_opts(SecondsFormat::Micros, true);
        self.str(name, &text)
    }

    /// Finishes the object and returns its bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            self.buf.push('{');
        }
        self.buf.push('}');
        std::mem::take(&mut self.buf).into_bytes()
    }
}

/// Appends `value` as a JSON string literal (RFC 8259 escaping).
fn push_json_string(buf: &mut String, value: &str) {
    buf.push('"');
    for ch in value.chars() {
        match ch {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if (c as u32) < 0x20 => buf.push_str(&format!("\\u{:04x}", c as u32)),
            c => buf.push(c),
        }
    }
    buf.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn encodes_fields_in_order_as_valid_json() {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 24, 14, 0, 0)
            .single()
            .unwrap();
        let bytes = Canonical::new()
            .i64("id", 7)
            .str("action", "restart \"pod\"\n")
            .opt_str("reason", None)
            .bool("allowed", true)
            .time("at", at)
            .finish();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            r#"{"id":7,"action":"restart \"pod\"\n","reason":null,"allowed":true,"at":"2026-11-24T14:00:00.000000Z"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["action"], "restart \"pod\"\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        let bytes = Canonical::new().str("k", "\u{1}").finish();
        assert_eq!(bytes, br#"{"k":"\u0001"}"#);
    }

    #[test]
    fn empty_row_is_an_empty_object() {
        assert_eq!(Canonical::new().finish(), b"{}");
    }
}
