//! The `aegis` commands the README and docs/ show are real commands: every invocation in a
//! ```` ```sh ```` block (`aegis …` or `cargo run --release -- …`) must parse with this
//! binary's command line, so a renamed flag or subcommand fails here instead of in a
//! newcomer's terminal; this covers the blocks `tests/docs_run.rs` does not run too. The blocks
//! are found by `tests/common/doc_blocks.rs`, the reader both tests share.

use std::path::Path;

use clap::Parser;

use crate::cli::Cli;

#[path = "../tests/common/doc_blocks.rs"]
mod doc_blocks;

use doc_blocks::{blocks, documents};

/// The commands of every shell block of one document, continuation lines joined (its
/// `doc-test` comments are checked by `tests/docs_run.rs`).
fn shell_lines(text: &str) -> Vec<String> {
    blocks(text)
        .map(|blocks| blocks.into_iter().flat_map(|b| b.commands).collect())
        .unwrap_or_default()
}

/// Shell words of one command: quotes removed, `$(…)` kept whole, a `#` comment dropped.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut chars = command.chars().peekable();
    let mut quote: Option<char> = None;
    let mut depth = 0;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') if depth == 0 => quote = Some(c),
            (None, '$') if chars.peek() == Some(&'(') => {
                depth += 1;
                word.push(c);
            }
            (None, ')') if depth > 0 => {
                depth -= 1;
                word.push(c);
            }
            (None, '#') if depth == 0 && word.is_empty() => break,
            (None, c) if c.is_whitespace() && depth == 0 => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            (None, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The arguments of each `aegis` invocation on a line (after `VAR=value` prefixes, in
/// every part of a `;`, `&&`, `|` or `&` list).
fn invocations(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for part in line.split(['|', ';', '&']) {
        let w = words(part);
        let mut rest = w
            .iter()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'))
            .cloned()
            .collect::<Vec<_>>();
        if rest.first().map(String::as_str) == Some("cargo") {
            match rest.iter().position(|w| w == "--") {
                Some(i) if rest.get(1).map(String::as_str) == Some("run") => {
                    rest = std::iter::once("aegis".to_owned())
                        .chain(rest[i + 1..].iter().cloned())
                        .collect();
                }
                _ => continue,
            }
        }
        if rest.first().map(String::as_str) == Some("aegis") {
            out.push(rest);
        }
    }
    out
}

#[test]
fn every_aegis_command_in_the_docs_parses() {
    let mut seen = 0;
    let mut bad = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for path in documents(root) {
        let name = path.strip_prefix(root).unwrap_or(&path).display();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in shell_lines(&text) {
            for args in invocations(&line) {
                seen += 1;
                if let Err(e) = Cli::try_parse_from(&args) {
                    bad.push(format!("{name}: `{line}`: {}", e.kind()));
                }
            }
        }
    }
    assert!(
        seen >= 15,
        "found only {seen} commands: is the extraction broken?"
    );
    assert!(
        bad.is_empty(),
        "commands in the docs that do not parse:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_extraction_reads_shell_like_a_shell() {
    let lines = shell_lines(
        "x\n```sh\nA=1 aegis backtest \\\n  --input a.csv --output b.csv # c\n```\n```toml\naegis = 1\n```\n",
    );
    assert_eq!(lines.len(), 1);
    assert_eq!(
        invocations(&lines[0]),
        [["aegis", "backtest", "--input", "a.csv", "--output", "b.csv"]]
    );
    assert_eq!(
        invocations("cargo run --release -- serve & curl x | jq . ; aegis audit verify"),
        [vec!["aegis", "serve"], vec!["aegis", "audit", "verify"]]
    );
    assert_eq!(
        words(r#"aegis backup --to /b/a-$(date -u +%F).db --reason "two words""#),
        [
            "aegis",
            "backup",
            "--to",
            "/b/a-$(date -u +%F).db",
            "--reason",
            "two words"
        ]
    );
    // A flag that does not exist is caught.
    assert!(Cli::try_parse_from(["aegis", "backtest", "--inptu", "x"]).is_err());
}
