//! The ```` ```sh ```` blocks of the Markdown we ship and the `doc-test` comments above
//! them: read by `tests/docs_run.rs` (which runs them) and `src/doc_commands.rs` (which
//! parses every `aegis` command in them with the binary's command line).

#![allow(dead_code, reason = "each of the two users reads part of a block")]

use std::path::{Path, PathBuf};

/// One fenced shell block and what the comments above it say.
#[derive(Debug, Default)]
pub struct Block {
    /// Line of the opening fence (1-based).
    pub line: usize,
    /// Its commands, continuation lines joined.
    pub commands: Vec<String>,
    /// `not run: REASON`.
    pub not_run: Option<String>,
    /// Hidden setup.
    pub before: Vec<String>,
    /// Hidden checks.
    pub after: Vec<String>,
}

/// The Markdown files we ship under `root`: its own, and those under docs/, deploy/,
/// fuzz/, examples/.
pub fn documents(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "md"))
        .collect();
    for dir in ["docs", "deploy", "fuzz", "examples"] {
        walk(&root.join(dir), &mut out);
    }
    out.sort();
    out
}

/// A fence line's backtick count and info string (CommonMark: three or more backticks, an
/// info string without backticks), or `None` for any other line.
pub fn fence(trimmed: &str) -> Option<(usize, &str)> {
    let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
    let info = trimmed[ticks..].trim();
    (ticks >= 3 && !info.contains('`')).then_some((ticks, info))
}

/// The shell blocks of one document, or what is wrong with its `doc-test` comments.
pub fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut comments: Vec<(usize, String)> = Vec::new();
    // The open fence's backtick count, and the shell block when it is one.
    let mut open: Option<(usize, Option<Block>)> = None;
    let mut pending = String::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if let Some((ticks, block)) = open.as_mut() {
            if fence(trimmed).is_some_and(|(n, info)| n >= *ticks && info.is_empty()) {
                if let Some(block) = open.take().and_then(|(_, b)| b) {
                    out.push(block);
                }
                continue;
            }
            let Some(block) = block.as_mut() else {
                continue;
            };
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    pending.push_str(head.trim_end());
                    pending.push(' ');
                }
                None => {
                    pending.push_str(trimmed);
                    let command = std::mem::take(&mut pending);
                    if !command.is_empty() {
                        block.commands.push(command);
                    }
                }
            }
            continue;
        }
        if let Some((ticks, info)) = fence(trimmed) {
            let language = info.split_whitespace().next().unwrap_or("");
            if language != "sh" && language != "bash" {
                if let Some((at, _)) = comments.first() {
                    return Err(format!(
                        "line {at}: a doc-test comment must be right above a ```sh block"
                    ));
                }
                open = Some((ticks, None));
                continue;
            }
            let mut block = Block {
                line: number,
                ..Block::default()
            };
            for (at, comment) in comments.drain(..) {
                if let Some(reason) = comment.strip_prefix("not run:") {
                    if reason.trim().is_empty() {
                        return Err(format!("line {at}: `not run:` needs a reason"));
                    }
                    block.not_run = Some(reason.trim().to_owned());
                } else if let Some(shell) = comment.strip_prefix("before:") {
                    block.before.push(shell.trim().to_owned());
                } else if let Some(shell) = comment.strip_prefix("after:") {
                    block.after.push(shell.trim().to_owned());
                } else {
                    return Err(format!(
                        "line {at}: unknown doc-test comment `{comment}` (not run: / before: / after:)"
                    ));
                }
            }
            open = Some((ticks, Some(block)));
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("<!-- doc-test:") {
            let Some(body) = rest.strip_suffix("-->") else {
                return Err(format!(
                    "line {number}: a doc-test comment must end on its line"
                ));
            };
            comments.push((number, body.trim().to_owned()));
        } else if let Some((at, _)) = comments.first() {
            return Err(format!(
                "line {at}: a doc-test comment must be right above a ```sh block"
            ));
        }
    }
    if let Some((at, _)) = comments.first() {
        return Err(format!(
            "line {at}: a doc-test comment must be right above a ```sh block"
        ));
    }
    if open.is_some() {
        return Err("a code block is not closed".into());
    }
    Ok(out)
}
