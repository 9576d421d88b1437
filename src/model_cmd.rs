//! `aegis model fit` and `aegis model score`: the isolation forest offline, on CSV files.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use aegis_detectors::{IsolationForest, IsolationForestParams, Matrix, ModelFile, ModelPayload};

/// What `model fit` was asked.
pub struct FitArgs<'a> {
    /// Model kind.
    pub kind: &'a str,
    /// Training data.
    pub input: &'a Path,
    /// Model file to write.
    pub output: &'a Path,
    /// Forest parameters.
    pub params: IsolationForestParams,
    /// Columns to leave out.
    pub exclude: &'a [String],
    /// Threshold stored with the model.
    pub threshold: f64,
}

/// A numeric table read from CSV.
struct Table {
    columns: Vec<String>,
    /// Row-major values.
    values: Vec<f64>,
}

/// Reads a CSV file: a header row, then numeric cells (quotes allowed, blank lines skipped).
fn read_csv(path: &Path) -> Result<Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(format!(
            "{}: the file is empty; a header row is expected",
            path.display()
        ));
    };
    let unquote = |c: &str| c.trim().trim_matches('"').to_string();
    let columns: Vec<String> = header.split(',').map(unquote).collect();
    if columns.iter().any(String::is_empty) {
        return Err(format!(
            "{}:1: every column needs a name in the header",
            path.display()
        ));
    }
    let mut values = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != columns.len() {
            return Err(format!(
                "{}:{}: {} cells, the header has {} columns",
                path.display(),
                i + 1,
                cells.len(),
                columns.len()
            ));
        }
        for (c, cell) in cells.iter().enumerate() {
            let cell = unquote(cell);
            let v: f64 = cell.parse().map_err(|_| {
                format!(
                    "{}:{}: column `{}`: `{cell}` is not a number",
                    path.display(),
                    i + 1,
                    columns[c]
                )
            })?;
            if !v.is_finite() {
                return Err(format!(
                    "{}:{}: column `{}`: `{cell}` is not finite",
                    path.display(),
                    i + 1,
                    columns[c]
                ));
            }
            values.push(v);
        }
    }
    Ok(Table { columns, values })
}

/// The matrix of `columns` (by name, in that order) of `table`.
fn select(table: &Table, columns: &[String]) -> Result<Matrix, String> {
    let idx: Vec<usize> = columns
        .iter()
        .map(|name| {
            table
                .columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| format!("the input has no column `{name}`"))
        })
        .collect::<Result<_, _>>()?;
    let width = table.columns.len();
    let rows = table.values.len() / width.max(1);
    let mut data = Vec::with_capacity(rows * idx.len());
    for r in 0..rows {
        data.extend(idx.iter().map(|&c| table.values[r * width + c] as f32));
    }
    Matrix::new(data, idx.len().max(1)).map_err(|e| e.to_string())
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// `aegis model fit`.
pub fn fit(args: FitArgs<'_>) -> ExitCode {
    if args.kind != "isolation-forest" {
        return fail(format!(
            "`--kind {}` cannot be fitted offline; use `isolation-forest`",
            args.kind
        ));
    }
    if !(args.threshold > 0.0 && args.threshold < 1.0) {
        return fail("`--threshold` must be between 0 and 1");
    }
    let table = match read_csv(args.input) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    if let Some(missing) = args.exclude.iter().find(|e| !table.columns.contains(e)) {
        return fail(format!(
            "`--exclude {missing}`: the input has no such column"
        ));
    }
    let schema: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !args.exclude.contains(c))
        .cloned()
        .collect();
    if schema.is_empty() {
        return fail("no feature columns are left");
    }
    let x = match select(&table, &schema) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let started = std::time::Instant::now();
    let forest = match IsolationForest::fit(x.view(), &args.params) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let now = chrono::Utc::now();
    let file = match ModelFile::new(
        ModelPayload::IsolationForest(forest),
        schema.clone(),
        Some(args.threshold),
        x.rows(),
        now.to_rfc3339(),
        now.timestamp(),
    ) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if let Err(e) = file.save(args.output) {
        return fail(e);
    }
    println!(
        "fitted {} on {} rows × {} features ({}) in {:.1} ms: {}",
        file.version,
        x.rows(),
        schema.len(),
        schema.join(", "),
        started.elapsed().as_secs_f64() * 1e3,
        args.output.display()
    );
    ExitCode::SUCCESS
}

/// `aegis model score`.
pub fn score(model: &Path, input: &Path, output: &Path) -> ExitCode {
    let file = match ModelFile::load(model) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let ModelPayload::IsolationForest(forest) = &file.payload else {
        return fail(format!(
            "{}: holds a {} model, not an isolation forest",
            model.display(),
            file.kind().as_str()
        ));
    };
    let table = match read_csv(input) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    // The model's columns by name, so extra columns (labels, ids) may stay in the file.
    let x = match select(&table, &file.feature_schema) {
        Ok(x) => x,
        Err(e) => {
            return fail(format!(
                "{e} (the model `{}` needs: {})",
                file.version,
                file.feature_schema.join(", ")
            ));
        }
    };
    let scores = match forest.score(x.view()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut text = String::with_capacity(scores.len() * 20 + 6);
    text.push_str("score\n");
    for s in &scores {
        text.push_str(&format!("{s}\n"));
    }
    let written = if output.as_os_str() == "-" {
        std::io::stdout().write_all(text.as_bytes())
    } else {
        std::fs::write(output, text)
    };
    if let Err(e) = written {
        return fail(format!("{}: {e}", output.display()));
    }
    eprintln!("scored {} rows with {}", scores.len(), file.version);
    ExitCode::SUCCESS
}
