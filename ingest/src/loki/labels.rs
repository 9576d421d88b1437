//! The label string of a Loki stream: `{app="api", namespace="prod"}`, Prometheus syntax
//! with `\"`, `\\` and `\n` escapes.

use crate::DecodeError;

/// Parses `{name="value", ...}` into pairs sorted by name.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, DecodeError> {
    let bad = |why: &str| {
        DecodeError::Invalid(format!(
            "stream labels `{}`: {why}",
            crate::registry::truncate(text, 120)
        ))
    };
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| bad("must be enclosed in `{}`"))?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if name.is_empty() {
            return Err(bad("expected a label name"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(bad("expected `=` after a label name"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('"') {
            return Err(bad("label values must be quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(bad("unterminated value")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(c) => value.push(c),
                    None => return Err(bad("unterminated escape")),
                },
                Some(c) => value.push(c),
            }
        }
        out.push((name, value));
    }
    // Clients (winston-loki among them) do not sort; the registry wants sorted, unique names.
    out.sort();
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad("a label name appears twice"));
    }
    Ok(out)
}
