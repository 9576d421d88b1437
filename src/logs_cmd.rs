//! `aegis logs templates`: the Drain miner the engine runs on every Loki stream, over a log
//! file, so an SRE can see what Aegis will make of their logs (which lines it groups, how
//! many templates, what it masks) before pointing Loki at it.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use aegis_detectors::{Drain, DrainConfig, TemplateId};
use anyhow::Context;
use serde::Serialize;

/// One template and how many lines it took.
#[derive(Debug, Serialize)]
struct TemplateRow {
    template_id: TemplateId,
    count: u64,
    template: String,
}

/// Mines `input` line by line (invalid UTF-8 replaced, a trailing `\r` dropped, as ingest
/// does); prints the templates with their counts, most frequent first (CSV, or JSON when
/// `json`), and with `output` writes each line's template id: CSV `line,template_id` (1-based
/// line numbers), or JSON `{"lines": [...], "templates": [...]}` when the name ends in
/// `.json`.
pub fn templates(input: &Path, output: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(input).with_context(|| input.display().to_string())?;
    let mut reader = std::io::BufReader::new(file);
    let mut drain = Drain::new(DrainConfig::default());
    let mut ids: Vec<TemplateId> = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", input.display()))?;
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        ids.push(drain.add(line.trim_end_matches(['\n', '\r'])).template);
    }
    let mut rows: Vec<TemplateRow> = (0..drain.len())
        .filter_map(|i| {
            let id = TemplateId::try_from(i).ok()?;
            Some(TemplateRow {
                template_id: id,
                count: drain.count(id),
                template: drain.template(id)?,
            })
        })
        .filter(|r| r.count > 0)
        .collect();
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.template_id.cmp(&b.template_id))
    });

    if let Some(path) = output {
        let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
        let mut out = std::io::BufWriter::new(file);
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({ "lines": ids, "templates": rows }),
            )?;
            writeln!(out)?;
        } else {
            writeln!(out, "line,template_id")?;
            for (i, id) in ids.iter().enumerate() {
                writeln!(out, "{},{id}", i + 1)?;
            }
        }
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        let mut w = csv::Writer::from_writer(&mut out);
        for r in &rows {
            w.serialize(r)?;
        }
        w.flush()?;
    }
    eprintln!(
        "{} lines, {} templates{}",
        ids.len(),
        rows.len(),
        output.map_or(String::new(), |p| format!(
            "; each line's template in {}",
            p.display()
        ))
    );
    Ok(ExitCode::SUCCESS)
}
