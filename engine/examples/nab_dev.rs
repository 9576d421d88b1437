//! Development harness: the streaming detector over a NAB-style folder, scored.
//! `cargo run --release -p aegis-engine --example nab_dev -- DATA LABELS`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use aegis_engine::{StreamConfig, backtest, nab};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::path::Path::new(&args[1]);
    let labels = nab::parse_labels(&std::fs::read_to_string(&args[2]).unwrap()).unwrap();
    let mut config = StreamConfig::default();
    if let Ok(j) = std::env::var("CFG") {
        config = serde_json::from_str(&j).unwrap();
    }
    let files = backtest::csv_files(data).unwrap();
    if std::env::var("DETECT_ONLY").is_ok() {
        let rows: Vec<_> = files
            .iter()
            .map(|(p, _)| backtest::read_csv(p).unwrap())
            .collect();
        let n: usize = rows.iter().map(Vec::len).sum();
        let t = std::time::Instant::now();
        for r in &rows {
            std::hint::black_box(backtest::detect(r, &config));
        }
        let el = t.elapsed();
        println!(
            "detect only: {n} points in {el:?}: {:.0} points/s",
            n as f64 / el.as_secs_f64()
        );
        return;
    }
    let t = std::time::Instant::now();
    let scored = backtest::score_files(&files, &config).unwrap();
    let el = t.elapsed();
    if let Ok(name) = std::env::var("DUMP") {
        for s in scored.iter().filter(|s| s.key.contains(&name)) {
            for (i, (r, x)) in s.rows.iter().zip(&s.scores).enumerate() {
                println!(
                    "{i} {} {} {:.4} {:.4}",
                    r.timestamp, r.value, x.raw, x.score
                );
            }
        }
        return;
    }
    let results: Vec<_> = scored.iter().map(|s| s.result()).collect();
    let points: usize = results.iter().map(|r| r.scores.len()).sum();
    eprintln!("{points} points in {el:?}");
    for (best, at) in nab::score_corpus(
        &results,
        &labels,
        &nab::standard_profiles(),
        Some(config.threshold),
    ) {
        let (f, w, fp) = best.totals();
        let at = at.unwrap();
        let (f2, _, fp2) = at.totals();
        let rows: usize = at.files.iter().map(|f| f.scored_rows).sum();
        println!(
            "{:<20} best {:6.2} @ {:.4} ({f}/{w} found, {fp} fp) | default {:6.2} ({f2} found, {fp2} fp, {:.2}/1000 scored points)",
            best.profile,
            best.normalized,
            best.threshold,
            at.normalized,
            1000.0 * fp2 as f64 / rows as f64
        );
        if std::env::var("VERBOSE").is_ok() && best.profile == "standard" {
            for o in &best.files {
                println!(
                    "  {:<55} {}/{} fp {:3} {:6.2}",
                    o.file, o.found, o.windows, o.false_detections, o.score
                );
            }
        }
    }
}
