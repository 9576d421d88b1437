//! The `aegis` commands the README and docs/ show are real commands: every invocation in a
//! ```` ```sh ```` block (`aegis …` or `cargo run --release -- …`) must parse with this
//! binary's command line, so a renamed flag or subcommand fails here instead of in a
//! newcomer's terminal. What they do is tested where each command is (tests/*_cli.rs).

use clap::Parser;

use crate::cli::Cli;

/// Every document with shell blocks, by name.
const DOCS: [(&str, &str); 14] = [
    ("README.md", include_str!("../README.md")),
    (
        "docs/alertmanager.md",
        include_str!("../docs/alertmanager.md"),
    ),
    (
        "docs/architecture.md",
        include_str!("../docs/architecture.md"),
    ),
    ("docs/cli.md", include_str!("../docs/cli.md")),
    (
        "docs/configuration.md",
        include_str!("../docs/configuration.md"),
    ),
    ("docs/deployment.md", include_str!("../docs/deployment.md")),
    ("docs/detection.md", include_str!("../docs/detection.md")),
    ("docs/engine.md", include_str!("../docs/engine.md")),
    ("docs/executor.md", include_str!("../docs/executor.md")),
    ("docs/http.md", include_str!("../docs/http.md")),
    ("docs/operations.md", include_str!("../docs/operations.md")),
    ("docs/policies.md", include_str!("../docs/policies.md")),
    ("docs/testing.md", include_str!("../docs/testing.md")),
    ("deploy/README.md", include_str!("../deploy/README.md")),
];

/// The lines of every ```` ```sh ```` block, continuation lines joined.
fn shell_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            inside = !inside && (trimmed == "```sh" || trimmed == "```bash");
            continue;
        }
        if !inside {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
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
    for (name, text) in DOCS {
        for line in shell_lines(text) {
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
