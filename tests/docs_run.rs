//! The shell blocks of the README and the docs are run, not just read: every ```` ```sh ````
//! block of every Markdown file we ship is executed by bash in a sandbox, as a reader would
//! type it, or carries a comment right above it saying why it is not run. So a command that
//! stopped working, a path that moved or an answer that changed fails here, not in a
//! newcomer's terminal.
//!
//! A document's blocks run in order in one shell (a variable set in one block is there in the
//! next, as in a reader's terminal), in a fresh folder with `aegis` on `PATH`, `HOME` inside
//! it and a free port instead of 3000. Lines are taken as written except for what a reader
//! would do by hand:
//! - `cargo run --release -- ARGS` is this test's `aegis ARGS` (the same binary, built once);
//! - `aegis serve`, in the foreground or with `&`, starts in the background with its log in
//!   `serve.log` (a reader would use a second terminal); the servers of earlier blocks are
//!   stopped first, and the block goes on once `/health` answers;
//! - `127.0.0.1:3000` is `127.0.0.1:$DOC_PORT`, and `AEGIS_LISTEN` says the same.
//!
//! Comments directly above a block steer it (invisible on GitHub):
//! - `<!-- doc-test: not run: REASON -->`: not run, and the reason must say why (needs a
//!   cluster, S3, a host named `db`; or it is the test command itself);
//! - `<!-- doc-test: before: SHELL -->`: hidden setup, e.g. the input file a command reads;
//! - `<!-- doc-test: after: SHELL -->`: a check that must pass afterwards; the block's output
//!   is in `$DOC_OUT`.
//!
//! Every command must succeed (`set -e`, `pipefail`); a document's blocks get ten minutes.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "a test fails loudly"
)]

mod common;
#[path = "common/doc_blocks.rs"]
mod doc_blocks;

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use doc_blocks::{Block, blocks, documents};

/// The repository root.
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// How long one document's blocks may take together.
const DOC_DEADLINE: Duration = Duration::from_secs(600);

/// A line as this sandbox runs it (see the module comment), as one or more shell lines.
fn rewrite(command: &str) -> Vec<String> {
    let line = command
        .replace("cargo run --release -- ", "aegis ")
        .replace("127.0.0.1:3000", "127.0.0.1:$DOC_PORT");
    let starts_server = line.split(['|', ';']).any(|part| {
        part.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w == ["aegis", "serve"])
    });
    if !starts_server {
        return vec![line];
    }
    let foreground = line.trim_end().trim_end_matches('&').trim_end();
    vec![
        "doc_stop_servers".to_owned(),
        format!("{foreground} >>serve.log 2>&1 &"),
        "doc_wait_server".to_owned(),
    ]
}

/// What every document's script starts with.
const PRELUDE: &str = r#"set -eo pipefail
# The script's own stderr, for messages from inside a block whose output is redirected.
exec 3>&2
trap 'echo "doc-test: failed: $BASH_COMMAND" >&3' ERR
doc_servers=()
doc_stop_servers() {
  local p
  for p in "${doc_servers[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  doc_servers=()
}
doc_wait_server() {
  local pid=$! i
  doc_servers+=("$pid")
  for i in $(seq 600); do
    if curl -s -o /dev/null "127.0.0.1:$DOC_PORT/health"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "doc-test: the server exited; the end of serve.log:" >&3; tail -20 serve.log >&3; return 1
    fi
    sleep 0.1
  done
  echo "doc-test: the server did not answer /health within 60 s" >&3; return 1
}
doc_exit() {
  local rc=$?
  doc_stop_servers
  if [ "$rc" -ne 0 ] && [ -z "${doc_shown:-}" ] && [ -f "${DOC_OUT:-}" ]; then
    echo "doc-test: the block's output:" >&3; cat "$DOC_OUT" >&3
  fi
}
trap doc_exit EXIT
"#;

/// The bash script that runs a document's blocks; `None` when none is to be run.
fn script(name: &str, blocks: &[Block]) -> Option<String> {
    let mut out = PRELUDE.to_owned();
    let mut any = false;
    for (n, block) in blocks.iter().enumerate() {
        if block.not_run.is_some() {
            continue;
        }
        any = true;
        writeln!(out, "echo '==> {name}:{}' >&2", block.line).unwrap();
        for line in &block.before {
            out.extend(rewrite(line).into_iter().map(|l| l + "\n"));
        }
        writeln!(out, "DOC_OUT=\"$DOC_DIR/.doc-out-{n}\"; doc_shown=").unwrap();
        out.push_str("{\n");
        for command in &block.commands {
            out.extend(rewrite(command).into_iter().map(|l| l + "\n"));
        }
        out.push_str("} > \"$DOC_OUT\" 2>&1\n");
        out.push_str("cat \"$DOC_OUT\" >&2; doc_shown=1\n");
        for check in &block.after {
            let lines = rewrite(check).join("; ");
            writeln!(
                out,
                "if ! ( {lines} ); then echo 'doc-test: check failed: {}' >&2; exit 1; fi",
                check.replace('\'', "'\\''")
            )
            .unwrap();
        }
    }
    any.then_some(out)
}

/// Runs `script` in a fresh sandbox: its output, or `Err` with it when it fails or overruns.
fn run(name: &str, script: &str) -> Result<String, String> {
    let sandbox = tempfile::tempdir().unwrap();
    let bin = sandbox.path().join("bin");
    let dir = sandbox.path().join("doc");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(common::BIN, bin.join("aegis")).unwrap();
    // `cargo` inside a doc test would be a build inside a build: such blocks say `not run`.
    let cargo = bin.join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/sh\necho 'doc-test: only `cargo run --release -- ARGS` is run (as aegis ARGS); mark other cargo blocks `not run`' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script_path = sandbox.path().join("doc.sh");
    std::fs::write(&script_path, script).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let log = sandbox.path().join("doc.log");
    let port = common::free_port();
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("bash")
        .arg(&script_path)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &dir)
        .env("LANG", "C.UTF-8")
        .env("DOC_DIR", &dir)
        .env("DOC_REPO", REPO)
        .env("DOC_PORT", port.to_string())
        // The default listener, moved to the free port the rewritten URLs name.
        .env("AEGIS_LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DOC_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the script left behind (a server, a sleep) goes with its process group.
    let group = child.id().to_string();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(output),
        Some(s) => Err(format!("{name}: {s}\n{output}")),
        None => Err(format!(
            "{name}: still running after {DOC_DEADLINE:?}\n{output}"
        )),
    }
}

#[test]
fn every_shell_block_in_the_docs_runs_or_says_why_not() {
    let mut scripts = Vec::new();
    let mut problems = Vec::new();
    let (mut run_count, mut not_run) = (0, Vec::new());
    for path in documents(Path::new(REPO)) {
        let name = path.strip_prefix(REPO).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        match blocks(&text) {
            Ok(blocks) => {
                for b in &blocks {
                    match &b.not_run {
                        Some(reason) => not_run.push(format!("{name}:{}: {reason}", b.line)),
                        None => run_count += 1,
                    }
                }
                if let Some(script) = script(&name, &blocks) {
                    scripts.push((name, script));
                }
            }
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        run_count >= 8,
        "only {run_count} blocks to run: is the extraction broken?"
    );
    eprintln!(
        "{run_count} blocks run; not run ({}):\n  {}",
        not_run.len(),
        not_run.join("\n  ")
    );
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = scripts
            .iter()
            .map(|(name, script)| s.spawn(move || run(name, script)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join().unwrap() {
                // Shown with `--nocapture`: what each block printed.
                Ok(output) => {
                    eprintln!("{output}");
                    None
                }
                Err(e) => Some(e),
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs the blocks of the Markdown `doc` as the docs test runs a document.
fn run_doc(name: &str, doc: &str) -> Result<String, String> {
    run(name, &script(name, &blocks(doc).unwrap()).unwrap())
}

#[test]
fn the_runner_fails_when_a_command_or_a_check_fails() {
    let doc = "text\n\n```sh\naegis backtest --inptu x.csv\n```\n";
    let err = run_doc("bad-flag.md", doc).unwrap_err();
    assert!(err.contains("--inptu"), "{err}");

    let doc = "<!-- doc-test: after: grep -q never \"$DOC_OUT\" -->\n```sh\necho hello\n```\n";
    let err = run_doc("check.md", doc).unwrap_err();
    assert!(err.contains("check failed: grep -q never"), "{err}");

    // A server in the foreground starts in the background and is there for the next line.
    let doc = "```sh\ncargo run --release -- serve\ncurl -sf 127.0.0.1:3000/health\n```\n";
    run_doc("serve.md", doc).unwrap();
}

#[test]
fn doc_test_comments_are_checked() {
    assert!(
        blocks("<!-- doc-test: not run: -->\n```sh\nx\n```\n")
            .unwrap_err()
            .contains("needs a reason")
    );
    assert!(
        blocks("<!-- doc-test: skip -->\n```sh\nx\n```\n")
            .unwrap_err()
            .contains("unknown doc-test comment")
    );
    assert!(
        blocks("<!-- doc-test: not run: why -->\n\nprose\n```sh\nx\n```\n")
            .unwrap_err()
            .contains("right above")
    );
    let b = blocks(
        "<!-- doc-test: not run: needs a cluster -->\n```sh\na \\\n  b\n```\n```toml\n```sh\n```\n```` ```sh ```` prose\n```bash\nc\n```\n",
    )
    .unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].not_run.as_deref(), Some("needs a cluster"));
    assert_eq!(b[0].commands, ["a b"]);
    assert_eq!(b[1].commands, ["c"]);
    assert_eq!(
        rewrite("A=1 cargo run --release -- serve &"),
        [
            "doc_stop_servers",
            "A=1 aegis serve >>serve.log 2>&1 &",
            "doc_wait_server"
        ]
    );
    assert_eq!(
        rewrite("curl -s 127.0.0.1:3000/health"),
        ["curl -s 127.0.0.1:$DOC_PORT/health"]
    );
}
