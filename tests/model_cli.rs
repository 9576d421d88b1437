//! `aegis model fit` and `aegis model score` on ODDS data, as users run them.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::path::Path;
use std::process::{Command, Output};

use aegis_detectors::{mat, metrics};

const BIN: &str = env!("CARGO_BIN_EXE_aegis");

fn aegis(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Writes an ODDS `.mat` file as CSV: `x1..xd,label`; returns the labels.
fn odds_csv(name: &str, out: &Path) -> Vec<bool> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("detectors/tests/data")
        .join(name);
    let vars = mat::read_file(&path).unwrap();
    let (x, y) = (&vars["X"], &vars["y"]);
    let mut text: Vec<String> = (1..=x.cols).map(|c| format!("x{c}")).collect();
    text.push("label".into());
    let mut csv = text.join(",") + "\n";
    for r in 0..x.rows {
        let row: Vec<String> = (0..x.cols).map(|c| x.column(c)[r].to_string()).collect();
        csv.push_str(&format!("{},{}\n", row.join(","), y.data[r]));
    }
    std::fs::write(out, csv).unwrap();
    y.data.iter().map(|v| *v != 0.0).collect()
}

#[test]
fn fit_then_score_odds_files_reach_the_reference_auc() {
    let dir = tempfile::tempdir().unwrap();
    // scikit-learn's AUC (t = 100, ψ = 256, mean of 5 seeds) less 0.02.
    for (name, floor) in [("breastw.mat", 0.968), ("wbc.mat", 0.918)] {
        let csv = dir.path().join(format!("{name}.csv"));
        let labels = odds_csv(name, &csv);
        let mut sum = 0.0;
        for seed in 0..5 {
            let model = dir.path().join(format!("{name}-{seed}.json"));
            let scores = dir.path().join(format!("{name}-{seed}.scores.csv"));
            let seed = seed.to_string();
            let out = aegis(&[
                "model",
                "fit",
                "--kind",
                "isolation-forest",
                "--input",
                csv.to_str().unwrap(),
                "--output",
                model.to_str().unwrap(),
                "--trees",
                "100",
                "--sample-size",
                "256",
                "--seed",
                &seed,
                "--exclude",
                "label",
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("fitted isolation-forest-"));
            let out = aegis(&[
                "model",
                "score",
                "--model",
                model.to_str().unwrap(),
                "--input",
                csv.to_str().unwrap(),
                "--output",
                scores.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = std::fs::read_to_string(&scores).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("score,is_anomaly"));
            let s: Vec<f64> = lines
                .map(|l| l.split(',').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(s.len(), labels.len(), "one score per input row");
            sum += metrics::roc_auc(&s, &labels).unwrap();
        }
        let auc = sum / 5.0;
        assert!(auc >= floor, "{name}: AUC {auc:.3} below {floor}");
    }
}

#[test]
fn bad_input_is_refused_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "a,b\n1,2\n3,oops\n").unwrap();
    let model = dir.path().join("m.json");
    let out = aegis(&[
        "model",
        "fit",
        "--input",
        csv.to_str().unwrap(),
        "--output",
        model.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv:3: column `b`: `oops` is not a number"),
        "{err}"
    );

    std::fs::write(&csv, "a,b\n1,2\n3,4\n5,6\n").unwrap();
    let out = aegis(&[
        "model",
        "fit",
        "--input",
        csv.to_str().unwrap(),
        "--output",
        model.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Scoring data without the model's columns names what is missing.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "a,c\n1,2\n").unwrap();
    let out = aegis(&[
        "model",
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        other.to_str().unwrap(),
        "--output",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no column `b`"), "{err}");
    // Extra columns are fine; the order of the output is the input's.
    std::fs::write(&other, "id,b,a\n7,2,1\n8,600,500\n").unwrap();
    let out = aegis(&[
        "model",
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        other.to_str().unwrap(),
        "--output",
        "-",
    ]);
    assert!(out.status.success());
    let s: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(s.len(), 2);
    assert!(s[1] > s[0], "{s:?}");
    let out = aegis(&[
        "model",
        "fit",
        "--kind",
        "random-forest",
        "--input",
        csv.to_str().unwrap(),
        "--output",
        model.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// Writes an ODDS file as Parquet (snappy) and as Arrow IPC file and stream, with a text
/// `id` column a model cannot use.
fn odds_arrow(
    name: &str,
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("detectors/tests/data")
        .join(name);
    let vars = mat::read_file(&path).unwrap();
    let (x, y) = (&vars["X"], &vars["y"]);
    let mut fields = vec![Field::new("id", DataType::Utf8, false)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        (0..x.rows).map(|r| format!("row-{r}")),
    ))];
    for c in 0..x.cols {
        fields.push(Field::new(format!("x{}", c + 1), DataType::Float64, false));
        arrays.push(Arc::new(Float64Array::from(x.column(c).to_vec())));
    }
    fields.push(Field::new("label", DataType::Float64, false));
    arrays.push(Arc::new(Float64Array::from(y.data.clone())));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
    let pq = dir.join(format!("{name}.parquet"));
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&pq).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let ipc = dir.join(format!("{name}.arrow"));
    let mut w =
        arrow_ipc::writer::FileWriter::try_new(std::fs::File::create(&ipc).unwrap(), &schema)
            .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let stream = dir.join(format!("{name}.arrows"));
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(std::fs::File::create(&stream).unwrap(), &schema)
            .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    (pq, ipc, stream)
}

fn scores(model: &Path, input: &Path) -> Vec<f64> {
    let out = aegis(&[
        "model",
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        "-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn parquet_and_arrow_ipc_give_the_same_model_and_scores_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("breastw.csv");
    let labels = odds_csv("breastw.mat", &csv);
    let (pq, ipc, stream) = odds_arrow("breastw.mat", dir.path());
    let from_csv = dir.path().join("csv.json");
    let from_pq = dir.path().join("pq.json");
    for (input, model, exclude) in [(&csv, &from_csv, "label"), (&pq, &from_pq, "label,id")] {
        let out = aegis(&[
            "model",
            "fit",
            "--input",
            input.to_str().unwrap(),
            "--output",
            model.to_str().unwrap(),
            "--exclude",
            exclude,
            "--seed",
            "3",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reference = scores(&from_csv, &csv);
    assert_eq!(reference.len(), labels.len());
    assert!(metrics::roc_auc(&reference, &labels).unwrap() > 0.96);
    for input in [&pq, &ipc, &stream] {
        assert_eq!(scores(&from_pq, input), reference, "{}", input.display());
    }
    // A text column cannot be a feature: the error says how to leave it out.
    let out = aegis(&[
        "model",
        "fit",
        "--input",
        ipc.to_str().unwrap(),
        "--output",
        from_pq.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("column `id` is not numeric") && err.contains("--exclude id"),
        "{err}"
    );
}

#[test]
fn contamination_sets_the_threshold_that_flags_that_share() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("breastw.csv");
    let labels = odds_csv("breastw.mat", &csv);
    let model = dir.path().join("m.json");
    let out = aegis(&[
        "model",
        "fit",
        "--input",
        csv.to_str().unwrap(),
        "--output",
        model.to_str().unwrap(),
        "--exclude",
        "label",
        "--contamination",
        "0.35",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = aegis(&[
        "model",
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        csv.to_str().unwrap(),
        "--output",
        "-",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags: Vec<bool> = text.lines().skip(1).map(|l| l.ends_with(",1")).collect();
    assert_eq!(flags.len(), labels.len());
    let flagged = flags.iter().filter(|f| **f).count();
    // 35% of 683 rows is 240 (more only on tied scores); breastw has 239 anomalies and the
    // forest finds most of them.
    assert!((240..250).contains(&flagged), "{flagged}");
    let hits = flags
        .iter()
        .zip(&labels)
        .filter(|(f, l)| **f && **l)
        .count();
    assert!(hits as f64 / 239.0 > 0.85, "{hits}");
    let out = aegis(&[
        "model",
        "fit",
        "--input",
        csv.to_str().unwrap(),
        "--output",
        model.to_str().unwrap(),
        "--contamination",
        "0.9",
    ]);
    assert_eq!(out.status.code(), Some(1));
}
