//! `aegis backtest`: the streaming detector over recorded series, in event time, one
//! output row per input row, in input order; a file or a folder (results mirrored, files
//! scored in parallel); with `--labels`, scored by NAB's rules. `aegis backtest score`
//! scores any results folder in NAB's layout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use aegis_engine::StreamConfig;
use aegis_engine::backtest::{self, Scored};
use aegis_engine::nab::{self, FileResult, Labels, Profile, ProfileReport};

/// What `aegis backtest` was asked.
pub struct Request<'a> {
    /// A CSV file or a folder of them.
    pub input: &'a Path,
    /// A file (or `-`) for a file input, a folder for a folder input.
    pub output: &'a Path,
    /// NAB `combined_windows.json`, keyed by paths relative to the input folder.
    pub labels: Option<&'a Path>,
    /// NAB `profiles.json`; NAB v1.1's three when absent.
    pub profiles: Option<&'a Path>,
    /// The detector's settings.
    pub config: StreamConfig,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn load_scoring(
    labels: &Path,
    profiles: Option<&Path>,
) -> Result<(Labels, Vec<Profile>), backtest::BacktestError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| backtest::BacktestError::Io {
            path: p.display().to_string(),
            source,
        })
    };
    let labels = nab::parse_labels(&read(labels)?)?;
    let profiles = match profiles {
        Some(p) => nab::parse_profiles(&read(p)?)?,
        None => nab::standard_profiles(),
    };
    Ok((labels, profiles))
}

/// `aegis backtest --input FILE|DIR --output FILE|DIR [--labels FILE]`.
pub fn run(req: Request<'_>) -> ExitCode {
    let scoring = match req
        .labels
        .map(|l| load_scoring(l, req.profiles))
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let folder = req.input.is_dir();
    let files = if folder {
        match backtest::csv_files(req.input) {
            Ok(f) if f.is_empty() => {
                return fail(format!("{}: no *.csv file below it", req.input.display()));
            }
            Ok(f) => f,
            Err(e) => return fail(e),
        }
    } else {
        let key = req
            .input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![(req.input.to_path_buf(), key)]
    };
    let started = std::time::Instant::now();
    let scored =
        match with_progress(|done| backtest::score_files_counted(&files, &req.config, done)) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
    let elapsed = started.elapsed();
    for s in &scored {
        let target = if folder {
            req.output.join(&s.key)
        } else {
            req.output.to_path_buf()
        };
        if let Err(e) = write(&target, s) {
            return fail(e);
        }
    }
    let rows: usize = scored.iter().map(|s| s.rows.len()).sum();
    let flagged: usize = scored
        .iter()
        .map(|s| s.scores.iter().filter(|x| x.is_anomaly).count())
        .sum();
    eprintln!(
        "scored {rows} rows in {} file(s) in {:.2} s ({:.0} rows/s); {flagged} anomalous at threshold {}",
        scored.len(),
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64().max(1e-9),
        req.config.threshold
    );
    if let Some((labels, profiles)) = scoring {
        let results: Vec<FileResult> = scored.iter().map(Scored::result).collect();
        print_scores(&results, &labels, &profiles, Some(req.config.threshold));
    }
    ExitCode::SUCCESS
}

/// Runs `work`, printing the rows it has scored once a second on a terminal (standard
/// error) when it takes more than a few seconds; nothing when piped. A backtest has no
/// ticks: its run time follows the rows, whatever span of time they cover.
fn with_progress<T: Send>(work: impl FnOnce(&AtomicUsize) -> T + Send) -> T {
    use std::io::IsTerminal;
    let done = AtomicUsize::new(0);
    let finished = std::sync::atomic::AtomicBool::new(false);
    if !std::io::stderr().is_terminal() {
        return work(&done);
    }
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let started = std::time::Instant::now();
            let mut shown = false;
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let secs = started.elapsed().as_secs();
                if secs >= 3 && started.elapsed().subsec_millis() < 250 {
                    shown = true;
                    eprint!(
                        "\rbacktest: {} rows scored in {secs} s   ",
                        done.load(Ordering::Relaxed)
                    );
                }
            }
            if shown {
                eprint!("\r{}\r", " ".repeat(50));
            }
        });
        let out = work(&done);
        finished.store(true, Ordering::Relaxed);
        out
    })
}

fn write(target: &Path, s: &Scored) -> Result<(), String> {
    let name = target.display();
    if target.as_os_str() == "-" {
        return backtest::write_scores(&mut std::io::stdout().lock(), &s.rows, &s.scores)
            .map_err(|e| format!("standard output: {e}"));
    }
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(target).map_err(|e| format!("{name}: {e}"))?;
    let mut out = std::io::BufWriter::new(file);
    backtest::write_scores(&mut out, &s.rows, &s.scores).map_err(|e| format!("{name}: {e}"))?;
    std::io::Write::flush(&mut out).map_err(|e| format!("{name}: {e}"))
}

fn print_report(r: &ProfileReport, label: &str, per_file: bool) {
    let (found, windows, fp) = r.totals();
    let rows: usize = r.files.iter().map(|f| f.scored_rows).sum();
    println!(
        "{:<20} {label:<9} threshold {:.4}  score {:6.2}  windows {found}/{windows}  false detections {fp} ({:.2} per 1,000 points)",
        r.profile,
        r.threshold,
        r.normalized,
        1000.0 * fp as f64 / rows.max(1) as f64
    );
    if per_file {
        for f in &r.files {
            println!(
                "    {:<58} found {}/{}  missed {}  false {}",
                f.file, f.found, f.windows, f.missed, f.false_detections
            );
        }
    }
}

fn print_scores(results: &[FileResult], labels: &Labels, profiles: &[Profile], fixed: Option<f64>) {
    let unlabelled = results
        .iter()
        .filter(|r| !labels.contains_key(&r.key))
        .count();
    if unlabelled > 0 {
        eprintln!(
            "note: {unlabelled} file(s) have no entry in the labels; every detection in them counts as false"
        );
    }
    let detailed = profiles
        .iter()
        .position(|p| p.name == "standard")
        .unwrap_or(0);
    for (i, (best, at)) in nab::score_corpus(results, labels, profiles, fixed)
        .iter()
        .enumerate()
    {
        print_report(best, "optimised", i == detailed);
        if let Some(at) = at {
            print_report(at, "default", false);
        }
    }
}

/// `aegis backtest score --data DIR --results DIR --labels FILE [--profiles FILE]`: scores
/// a results folder in NAB's layout (`DIR/<category>/<name>.csv` or NAB's own
/// `<detector>_<name>.csv`, with an `anomaly_score` column) against the data's labels.
pub fn score(data: &Path, results: &Path, labels: &Path, profiles: Option<&Path>) -> ExitCode {
    let (labels, profiles) = match load_scoring(labels, profiles) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let data_files = match backtest::csv_files(data) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let mut out = Vec::with_capacity(data_files.len());
    for (data_path, key) in data_files {
        let Some(path) = result_path(results, &key) else {
            return fail(format!(
                "{}: no result for {key} (expected {})",
                results.display(),
                results.join(&key).display()
            ));
        };
        match read_result(&path, &data_path, key) {
            Ok(r) => out.push(r),
            Err(e) => return fail(e),
        }
    }
    print_scores(&out, &labels, &profiles, None);
    ExitCode::SUCCESS
}

/// `results/<key>`, or NAB's `results/<dir>/<detector>_<name>` when that is what is there.
fn result_path(results: &Path, key: &str) -> Option<PathBuf> {
    let direct = results.join(key);
    if direct.is_file() {
        return Some(direct);
    }
    let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
    let folder = results.join(dir);
    std::fs::read_dir(&folder).ok()?.flatten().find_map(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.strip_suffix(name)
            .filter(|p| p.ends_with('_'))
            .map(|_| e.path())
    })
}

fn read_result(path: &Path, data_path: &Path, key: String) -> Result<FileResult, String> {
    let result = backtest::read_scores(path, key).map_err(|e| e.to_string())?;
    let data = backtest::read_csv(data_path).map_err(|e| e.to_string())?;
    if data.len() != result.scores.len() {
        return Err(format!(
            "{}: {} rows, the data file {} has {}",
            path.display(),
            result.scores.len(),
            data_path.display(),
            data.len()
        ));
    }
    Ok(result)
}
