//! `aegis backtest`: the streaming detector over a recorded series, in event time, with the
//! same warm-up and retraining as live; one output row per input row, in input order.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use aegis_engine::{StreamConfig, StreamingDetector};

/// One input row.
struct Row {
    timestamp: String,
    at_ms: i64,
    series: String,
    value_text: String,
    value: f64,
}

fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<f64>() {
        // Seconds or milliseconds since the epoch, told apart by size.
        return Some(if n.abs() >= 1e11 {
            n as i64
        } else {
            (n * 1000.0) as i64
        });
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn read(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| format!("{}: empty; expected a header row", path.display()))?;
    let names: Vec<String> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let col = |n: &str| names.iter().position(|c| c == n);
    let (Some(t), Some(v)) = (col("timestamp"), col("value")) else {
        return Err(format!(
            "{}:1: the header must name `timestamp` and `value` (and optionally `series`), not `{header}`",
            path.display()
        ));
    };
    let s = col("series");
    let mut rows = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        if cells.len() != names.len() {
            return Err(format!(
                "{}:{}: {} cells, the header has {}",
                path.display(),
                i + 1,
                cells.len(),
                names.len()
            ));
        }
        let at_ms = parse_time(cells[t]).ok_or_else(|| {
            format!(
                "{}:{}: `{}` is not a time (RFC 3339 or epoch seconds/ms)",
                path.display(),
                i + 1,
                cells[t]
            )
        })?;
        let value: f64 = cells[v]
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| {
                format!(
                    "{}:{}: `{}` is not a finite number",
                    path.display(),
                    i + 1,
                    cells[v]
                )
            })?;
        rows.push(Row {
            timestamp: cells[t].to_string(),
            at_ms,
            series: s.map(|s| cells[s].to_string()).unwrap_or_default(),
            value_text: cells[v].to_string(),
            value,
        });
    }
    Ok(rows)
}

/// `aegis backtest --input FILE --output FILE`.
pub fn run(input: &Path, output: &Path, config: StreamConfig) -> ExitCode {
    let rows = match read(input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Per series, in event time (stable for equal timestamps), each with its own detector.
    let mut by_series: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_series.entry(r.series.as_str()).or_default().push(i);
    }
    let mut scores = vec![(0.0, false); rows.len()];
    for order in by_series.values_mut() {
        order.sort_by_key(|i| rows[*i].at_ms);
        let mut detector = StreamingDetector::new(config.clone());
        let mut done = Vec::with_capacity(order.len());
        for i in order.iter() {
            done.extend(detector.push(rows[*i].value));
        }
        done.extend(detector.finish());
        for (i, s) in order.iter().zip(done) {
            scores[*i] = (s.score, s.is_anomaly);
        }
    }
    let mut text = String::with_capacity(rows.len() * 48 + 48);
    text.push_str("timestamp,value,anomaly_score,is_anomaly\n");
    for (r, (score, flag)) in rows.iter().zip(&scores) {
        text.push_str(&format!(
            "{},{},{score:.6},{}\n",
            r.timestamp,
            r.value_text,
            u8::from(*flag)
        ));
    }
    let written = if output.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(text.as_bytes())
    } else {
        std::fs::write(output, text)
    };
    if let Err(e) = written {
        eprintln!("error: {}: {e}", output.display());
        return ExitCode::FAILURE;
    }
    let flagged = scores.iter().filter(|s| s.1).count();
    eprintln!(
        "scored {} rows in {} series; {flagged} anomalous",
        rows.len(),
        by_series.len()
    );
    ExitCode::SUCCESS
}
