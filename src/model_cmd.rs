//! `aegis model fit` and `aegis model score`: the isolation forest offline, on CSV,
//! Parquet or Arrow IPC files.

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
    /// Or the share of training rows to flag, which sets the threshold.
    pub contamination: Option<f64>,
}

/// A table read from CSV, Parquet or Arrow IPC: column names and, per column, its values
/// or why it cannot be a feature (not numeric, nulls).
struct Table {
    columns: Vec<String>,
    data: Vec<Result<Vec<f64>, String>>,
}

/// Reads CSV, Parquet or Arrow IPC (file or stream), told apart by their first bytes.
fn read_table(path: &Path) -> Result<Table, String> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let head = &head[..n];
    if head.starts_with(b"PAR1") {
        read_parquet(path)
    } else if head.starts_with(b"ARROW1") || head.starts_with(&[0xFF, 0xFF, 0xFF, 0xFF]) {
        read_ipc(path, head.starts_with(b"ARROW1"))
    } else {
        read_csv(path)
    }
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
    let mut data: Vec<Vec<f64>> = vec![Vec::new(); columns.len()];
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
            data[c].push(v);
        }
    }
    Ok(Table {
        columns,
        data: data.into_iter().map(Ok).collect(),
    })
}

fn read_parquet(path: &Path) -> Result<Table, String> {
    use arrow_array::RecordBatchReader;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| err(&e))?;
    let schema = reader.schema();
    let batches: Vec<arrow_array::RecordBatch> =
        reader.collect::<Result<_, _>>().map_err(|e| err(&e))?;
    Ok(from_batches(&schema, &batches))
}

fn read_ipc(path: &Path, file_format: bool) -> Result<Table, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let (schema, batches) = if file_format {
        let reader = arrow_ipc::reader::FileReader::try_new(file, None).map_err(|e| err(&e))?;
        let schema = reader.schema();
        (
            schema,
            reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?,
        )
    } else {
        let reader = arrow_ipc::reader::StreamReader::try_new(file, None).map_err(|e| err(&e))?;
        let schema = reader.schema();
        (
            schema,
            reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?,
        )
    };
    Ok(from_batches(&schema, &batches))
}

/// Numeric Arrow columns as `f64`; other types and nulls are recorded as reasons.
fn from_batches(schema: &arrow_schema::Schema, batches: &[arrow_array::RecordBatch]) -> Table {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::DataType as T;
    let mut data = Vec::with_capacity(schema.fields().len());
    for (c, field) in schema.fields().iter().enumerate() {
        let mut values = Vec::new();
        let mut problem = None;
        let mut row = 0usize;
        for batch in batches {
            let a = batch.column(c);
            if let Some(i) = (0..a.len()).find(|i| a.is_null(*i)) {
                problem = Some(format!(
                    "column `{}` has a null in row {}",
                    field.name(),
                    row + i + 1
                ));
                break;
            }
            row += a.len();
            macro_rules! take {
                ($t:ty) => {
                    values.extend(a.as_primitive::<$t>().values().iter().map(|v| *v as f64))
                };
            }
            match a.data_type() {
                T::Float64 => take!(Float64Type),
                T::Float32 => take!(Float32Type),
                T::Int8 => take!(Int8Type),
                T::Int16 => take!(Int16Type),
                T::Int32 => take!(Int32Type),
                T::Int64 => take!(Int64Type),
                T::UInt8 => take!(UInt8Type),
                T::UInt16 => take!(UInt16Type),
                T::UInt32 => take!(UInt32Type),
                T::UInt64 => take!(UInt64Type),
                other => {
                    problem = Some(format!(
                        "column `{}` is not numeric ({other})",
                        field.name()
                    ));
                    break;
                }
            }
        }
        if problem.is_none() && values.iter().any(|v| !v.is_finite()) {
            problem = Some(format!(
                "column `{}` holds a value that is not finite",
                field.name()
            ));
        }
        data.push(problem.map_or(Ok(values), Err));
    }
    Table {
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        data,
    }
}

/// The matrix of `columns` (by name, in that order) of `table`.
fn select(table: &Table, columns: &[String]) -> Result<Matrix, String> {
    let cols: Vec<&[f64]> = columns
        .iter()
        .map(|name| {
            let i = table
                .columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| format!("the input has no column `{name}`"))?;
            match &table.data[i] {
                Ok(v) => Ok(v.as_slice()),
                Err(why) => Err(format!("{why}; leave it out with `--exclude {name}`")),
            }
        })
        .collect::<Result<_, _>>()?;
    Matrix::from_columns(&cols).map_err(|e| e.to_string())
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
    let table = match read_table(args.input) {
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
    let threshold = match args.contamination {
        None => args.threshold,
        Some(c) => match forest.threshold_for_contamination(x.view(), c) {
            Ok(t) => t,
            Err(e) => return fail(e),
        },
    };
    let now = chrono::Utc::now();
    let file = match ModelFile::new(
        ModelPayload::IsolationForest(forest),
        schema.clone(),
        Some(threshold),
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
        "fitted {} on {} rows × {} features ({}) in {:.1} ms, threshold {threshold:.4}: {}",
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
    let table = match read_table(input) {
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
    // With a stored threshold, each row is also flagged.
    let threshold = file.threshold;
    let mut text = String::with_capacity(scores.len() * 24 + 16);
    text.push_str(if threshold.is_some() {
        "score,is_anomaly\n"
    } else {
        "score\n"
    });
    for s in &scores {
        match threshold {
            Some(t) => text.push_str(&format!("{s},{}\n", u8::from(*s >= t))),
            None => text.push_str(&format!("{s}\n")),
        }
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
