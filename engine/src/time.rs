//! Timestamps as people record them: `YYYY-mm-dd HH:MM:SS[.fff]` (UTC, NAB's and most
//! exporters' form), RFC 3339, or epoch seconds / milliseconds told apart by size.

use chrono::{NaiveDateTime, TimeZone, Utc};

/// Epoch milliseconds of `s`, or `None` when it is none of the accepted forms.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() {
            return None;
        }
        // Seconds or milliseconds since the epoch: 1e11 s is the year 5138, 1e11 ms 1973.
        return Some(if n.abs() >= 1e11 {
            n as i64
        } else {
            (n * 1000.0).round() as i64
        });
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(Utc.from_utc_datetime(&t).timestamp_millis());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp;

    #[test]
    fn every_accepted_form_gives_the_same_instant() {
        let want = Some(1_396_336_500_000);
        for s in [
            "2014-04-01 07:15:00",
            "2014-04-01 07:15:00.000000",
            "2014-04-01T07:15:00",
            "2014-04-01T07:15:00Z",
            "2014-04-01T09:15:00+02:00",
            "1396336500",
            "1396336500000",
            " 2014-04-01 07:15 ",
        ] {
            assert_eq!(parse_timestamp(s), want, "{s}");
        }
        for bad in ["", "yesterday", "2014-13-01 00:00:00", "NaN", "inf"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
