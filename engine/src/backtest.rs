//! Backtesting: recorded series through the streaming detector in event time, one score
//! per input row, in input order; a file or a whole folder of files (scored in parallel).
//!
//! Input is CSV with a header naming `timestamp` and `value` (and optionally `series`,
//! for several series in one file), read with a real CSV reader: quoting, a byte-order
//! mark and CRLF line ends are fine. Timestamps: `YYYY-mm-dd HH:MM:SS` (UTC), RFC 3339 or
//! epoch seconds / milliseconds ([`crate::time::parse_timestamp`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::nab::FileResult;
use crate::{StreamConfig, StreamScore, StreamingDetector};

/// Why a backtest input could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The content is not what a backtest takes; the message names the line.
    #[error("{path}:{line}: {message}")]
    Input {
        /// The path.
        path: String,
        /// 1-based line (1 is the header).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A labels or profiles file (NAB's `combined_windows.json`, `profiles.json`) does
    /// not parse.
    #[error("{0}")]
    Labels(String),
}

/// One input row.
#[derive(Debug, Clone)]
pub struct Row {
    /// The timestamp as written.
    pub timestamp: String,
    /// Epoch milliseconds.
    pub at_ms: i64,
    /// The `series` cell ("" without that column).
    pub series: String,
    /// The value as written.
    pub value_text: String,
    /// The value.
    pub value: f64,
}

/// Reads one CSV file of `timestamp,value[,series]` rows.
pub fn read_csv(path: &Path) -> Result<Vec<Row>, BacktestError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| BacktestError::Io {
        path: name.clone(),
        source,
    })?;
    parse_csv(&name, &bytes)
}

/// Parses CSV bytes (see [`read_csv`]); `name` is used in messages.
pub fn parse_csv(name: &str, bytes: &[u8]) -> Result<Vec<Row>, BacktestError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let err = |line: u64, message: String| BacktestError::Input {
        path: name.to_string(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| err(1, format!("not CSV: {e}")))?
        .clone();
    if header.is_empty() {
        return Err(err(1, "empty; expected a header row".into()));
    }
    let col = |n: &str| header.iter().position(|c| c.eq_ignore_ascii_case(n));
    let (Some(t), Some(v)) = (col("timestamp"), col("value")) else {
        return Err(err(
            1,
            format!(
                "the header must name `timestamp` and `value` (and optionally `series`), not `{}`",
                header.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    };
    let s = col("series");
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            err(line, e.to_string())
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let cell = |i: usize| record.get(i).unwrap_or("");
        let at_ms = crate::time::parse_timestamp(cell(t)).ok_or_else(|| {
            err(
                line,
                format!(
                    "`{}` is not a time (YYYY-mm-dd HH:MM:SS, RFC 3339 or epoch seconds/ms)",
                    cell(t)
                ),
            )
        })?;
        let value = cell(v)
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| err(line, format!("`{}` is not a finite number", cell(v))))?;
        rows.push(Row {
            timestamp: cell(t).to_string(),
            at_ms,
            series: s.map(|s| cell(s).to_string()).unwrap_or_default(),
            value_text: cell(v).to_string(),
            value,
        });
    }
    Ok(rows)
}

/// Reads a results file in NAB's layout: a header naming `timestamp` and `anomaly_score`
/// (other columns may stand beside them), one row per data row, for scoring as `key`.
pub fn read_scores(path: &Path, key: String) -> Result<FileResult, BacktestError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| BacktestError::Io {
        path: name.clone(),
        source,
    })?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let err = |line: u64, message: String| BacktestError::Input {
        path: name.clone(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| err(1, format!("not CSV: {e}")))?
        .clone();
    let col = |n: &str| header.iter().position(|c| c == n);
    let (Some(t), Some(s)) = (col("timestamp"), col("anomaly_score")) else {
        return Err(err(
            1,
            "the header must name `timestamp` and `anomaly_score`".into(),
        ));
    };
    let mut timestamps = Vec::new();
    let mut scores = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            err(line, e.to_string())
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |i: usize| record.get(i).unwrap_or("");
        timestamps.push(
            crate::time::parse_timestamp(cell(t))
                .ok_or_else(|| err(line, format!("`{}` is not a time", cell(t))))?,
        );
        scores.push(
            cell(s)
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| err(line, format!("`{}` is not a finite score", cell(s))))?,
        );
    }
    Ok(FileResult {
        key,
        timestamps,
        scores,
    })
}

/// Scores rows: each series with its own detector, in event time (stable for equal
/// timestamps); the result is in input order.
pub fn detect(rows: &[Row], config: &StreamConfig) -> Vec<StreamScore> {
    let mut by_series: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_series.entry(r.series.as_str()).or_default().push(i);
    }
    let empty = StreamScore {
        score: 0.0,
        is_anomaly: false,
        raw: 0.0,
        level: 0.0,
    };
    let mut scores = vec![empty; rows.len()];
    for order in by_series.values_mut() {
        order.sort_by_key(|i| rows[*i].at_ms);
        let mut config = config.clone();
        if config.step_secs.is_none() {
            config.step_secs = median_step_secs(order.iter().map(|i| rows[*i].at_ms));
        }
        let mut detector = StreamingDetector::new(config);
        for i in order.iter() {
            scores[*i] = detector.score(rows[*i].value);
        }
    }
    scores
}

/// The median gap between consecutive timestamps (in event order), in seconds; `None`
/// for fewer than two distinct times.
pub fn median_step_secs(times: impl Iterator<Item = i64>) -> Option<f64> {
    let mut prev = None;
    let mut gaps = Vec::new();
    for t in times {
        if let Some(p) = prev
            && t > p
        {
            gaps.push(t - p);
        }
        prev = Some(t);
    }
    if gaps.is_empty() {
        return None;
    }
    let mid = gaps.len() / 2;
    let (_, m, _) = gaps.select_nth_unstable(mid);
    Some(*m as f64 / 1000.0)
}

/// Writes `timestamp,value,anomaly_score,is_anomaly`, one line per row.
pub fn write_scores(
    out: &mut impl Write,
    rows: &[Row],
    scores: &[StreamScore],
) -> std::io::Result<()> {
    let mut text = String::with_capacity(rows.len() * 48 + 48);
    text.push_str("timestamp,value,anomaly_score,is_anomaly\n");
    for (r, s) in rows.iter().zip(scores) {
        let quote = |c: &str| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_string()
            }
        };
        text.push_str(&format!(
            "{},{},{:.6},{}\n",
            quote(&r.timestamp),
            quote(&r.value_text),
            s.score,
            u8::from(s.is_anomaly)
        ));
    }
    out.write_all(text.as_bytes())
}

/// Every `*.csv` below `dir`, sorted, as (path, `/`-separated path relative to `dir`).
pub fn csv_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, BacktestError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| BacktestError::Io {
            path: d.display().to_string(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| BacktestError::Io {
                path: d.display().to_string(),
                source,
            })?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")) {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((p, rel));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// One scored file.
#[derive(Debug)]
pub struct Scored {
    /// Path relative to the input folder (the file name for a single file).
    pub key: String,
    /// The rows read.
    pub rows: Vec<Row>,
    /// One score per row.
    pub scores: Vec<StreamScore>,
}

impl Scored {
    /// The scores in the scorer's form.
    pub fn result(&self) -> FileResult {
        FileResult {
            key: self.key.clone(),
            timestamps: self.rows.iter().map(|r| r.at_ms).collect(),
            scores: self.scores.iter().map(|s| s.score).collect(),
        }
    }
}

/// Reads and scores every file, in parallel on the rayon pool; in `files`' order.
pub fn score_files(
    files: &[(PathBuf, String)],
    config: &StreamConfig,
) -> Result<Vec<Scored>, BacktestError> {
    score_files_counted(files, config, &std::sync::atomic::AtomicUsize::new(0))
}

/// [`score_files`], adding each file's rows to `done` as it finishes (for progress).
pub fn score_files_counted(
    files: &[(PathBuf, String)],
    config: &StreamConfig,
    done: &std::sync::atomic::AtomicUsize,
) -> Result<Vec<Scored>, BacktestError> {
    files
        .par_iter()
        .map(|(path, key)| {
            let rows = read_csv(path)?;
            let scores = detect(&rows, config);
            done.fetch_add(rows.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(Scored {
                key: key.clone(),
                rows,
                scores,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_a_bom_and_crlf_are_read() {
        let text = b"\xEF\xBB\xBF\"timestamp\",\"value\"\r\n\"2014-04-01 00:00:00\",\"1.5\"\r\n2014-04-01 00:05:00,2\r\n\r\n";
        let rows = parse_csv("x.csv", text).expect("reads");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].value, 1.5);
        assert_eq!(rows[1].at_ms - rows[0].at_ms, 300_000);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let e = parse_csv("x.csv", b"timestamp,value\n1,2\nsoon,3\n").expect_err("refused");
        assert!(e.to_string().starts_with("x.csv:3:"), "{e}");
        let e = parse_csv("x.csv", b"timestamp,value\n1,abc\n").expect_err("refused");
        assert!(e.to_string().contains("not a finite number"), "{e}");
        let e = parse_csv("x.csv", b"time,v\n1,2\n").expect_err("refused");
        assert!(e.to_string().contains("must name"), "{e}");
        let e = parse_csv("x.csv", b"timestamp,value\n1,2,3\n").expect_err("refused");
        assert!(e.to_string().starts_with("x.csv:2:"), "{e}");
    }
}
