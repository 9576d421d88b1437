//! A Drain-style online log template miner (He, Zhu, Zheng and Lyu, ICWS 2017) and the
//! per-window log features built on it.
//!
//! A line is masked (IPs, UUIDs, hex ids, numbers become `<IP>`, `<UUID>`, `<HEX>`,
//! `<NUM>`), split on whitespace, and routed through a fixed-depth tree: first by token
//! count, then by its first `depth - 2` tokens (tokens holding digits share the `<*>`
//! branch). In the leaf, the template with the most equal tokens wins when that share
//! reaches the similarity threshold; its differing positions become `<*>`. Otherwise the
//! line starts a new template.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

/// Stable id of a template, in order of first appearance.
pub type TemplateId = u32;

/// The wildcard token of a template.
const WILDCARD: &str = "<*>";
/// The one token of the template that collects lines once the limit is reached.
const OVERFLOW: &str = "<overflow>";

/// Tuning of the miner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Depth of the parse tree including root and length level (≥ 3; default 4, so two
    /// leading tokens route a line).
    pub depth: usize,
    /// Share of equal tokens for a line to join a template (default 0.4).
    pub similarity: f64,
    /// Children per tree node before new tokens fall into `<*>` (default 100).
    pub max_children: usize,
    /// Templates kept at most; the miner stops creating new ones past this (default 10,000).
    pub max_templates: usize,
    /// Mask IPs, UUIDs, hex ids and numbers before mining (default true).
    pub mask: bool,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            depth: 4,
            similarity: 0.4,
            max_children: 100,
            max_templates: 10_000,
            mask: true,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Node {
    children: HashMap<Box<str>, Node, RandomState>,
    templates: Vec<TemplateId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Template {
    tokens: Vec<Box<str>>,
    count: u64,
}

/// The result of feeding one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// The template the line belongs to.
    pub template: TemplateId,
    /// The line created the template.
    pub new: bool,
}

/// The online miner. Feed lines with [`Drain::add`]; state can be saved with serde.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Drain {
    config: DrainConfig,
    roots: HashMap<usize, Node, RandomState>,
    templates: Vec<Template>,
    #[serde(default)]
    overflow: Option<TemplateId>,
    #[serde(skip)]
    masked: String,
    #[serde(skip)]
    spans: Vec<(u32, u32)>,
}

impl PartialEq for Drain {
    /// The mined state; the per-line scratch buffers do not count.
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.roots == other.roots
            && self.templates == other.templates
            && self.overflow == other.overflow
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new(DrainConfig::default())
    }
}

impl Drain {
    /// An empty miner.
    pub fn new(mut config: DrainConfig) -> Self {
        config.depth = config.depth.max(3);
        config.max_children = config.max_children.max(1);
        config.max_templates = config.max_templates.max(2);
        Self {
            config,
            roots: HashMap::default(),
            templates: Vec::new(),
            overflow: None,
            masked: String::new(),
            spans: Vec::new(),
        }
    }

    /// Number of templates so far.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether no line was seen.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The template text, tokens joined by one space.
    pub fn template(&self, id: TemplateId) -> Option<String> {
        self.templates.get(id as usize).map(|t| t.tokens.join(" "))
    }

    /// Lines seen per template.
    pub fn count(&self, id: TemplateId) -> u64 {
        self.templates.get(id as usize).map_or(0, |t| t.count)
    }

    /// Feeds one line; returns its template. An empty line maps to the empty template.
    pub fn add(&mut self, line: &str) -> Match {
        let mut masked = std::mem::take(&mut self.masked);
        let mut spans = std::mem::take(&mut self.spans);
        masked.clear();
        if self.config.mask {
            mask_into(line, &mut masked);
        } else {
            masked.push_str(line);
        }
        spans.clear();
        let mut start = None;
        for (i, b) in masked.bytes().enumerate() {
            if b.is_ascii_whitespace() {
                if let Some(s) = start.take() {
                    spans.push((s as u32, i as u32));
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            spans.push((s as u32, masked.len() as u32));
        }
        let tokens: Vec<&str> = spans
            .iter()
            .map(|&(a, b)| &masked[a as usize..b as usize])
            .collect();
        let m = self.add_tokens(&tokens);
        drop(tokens);
        self.masked = masked;
        self.spans = spans;
        m
    }

    fn add_tokens(&mut self, tokens: &[&str]) -> Match {
        let config = &self.config;
        let prefix = (config.depth - 2).min(tokens.len());
        let mut node = self.roots.entry(tokens.len()).or_default();
        for token in &tokens[..prefix] {
            let key: &str = if routes_as_wildcard(token) {
                WILDCARD
            } else {
                token
            };
            if !node.children.contains_key(key) {
                let full = node.children.len() >= config.max_children;
                let key = if full { WILDCARD } else { key };
                node = node.children.entry(key.into()).or_default();
            } else {
                // The key exists; the lookup cannot fail.
                node = match node.children.get_mut(key) {
                    Some(n) => n,
                    None => break,
                };
            }
        }
        // Best template in the leaf: most equal tokens, then most wildcards.
        let mut best: Option<(TemplateId, f64, usize)> = None;
        for &id in &node.templates {
            let t = &self.templates[id as usize];
            let (mut equal, mut wild) = (0usize, 0usize);
            for (a, b) in t.tokens.iter().zip(tokens) {
                if &**a == WILDCARD {
                    wild += 1;
                } else if &**a == *b {
                    equal += 1;
                }
            }
            let sim = if tokens.is_empty() {
                1.0
            } else {
                equal as f64 / tokens.len() as f64
            };
            if best.is_none_or(|(_, s, w)| sim > s || (sim == s && wild > w)) {
                best = Some((id, sim, wild));
            }
        }
        let full = self.templates.len() + 1 >= config.max_templates;
        if let Some((id, sim, _)) = best
            && (sim >= config.similarity || full)
        {
            let t = &mut self.templates[id as usize];
            for (a, b) in t.tokens.iter_mut().zip(tokens) {
                if &**a != *b && &**a != WILDCARD {
                    *a = WILDCARD.into();
                }
            }
            t.count += 1;
            return Match {
                template: id,
                new: false,
            };
        }
        if full {
            // At the limit, lines that fit nowhere share one overflow template, which
            // no line is ever matched against.
            let id = match self.overflow {
                Some(id) => id,
                None => {
                    self.templates.push(Template {
                        tokens: vec![OVERFLOW.into()],
                        count: 0,
                    });
                    let id = (self.templates.len() - 1) as TemplateId;
                    self.overflow = Some(id);
                    id
                }
            };
            self.templates[id as usize].count += 1;
            return Match {
                template: id,
                new: false,
            };
        }
        let id = self.templates.len() as TemplateId;
        self.templates.push(Template {
            tokens: tokens.iter().map(|t| Box::<str>::from(*t)).collect(),
            count: 1,
        });
        node.templates.push(id);
        Match {
            template: id,
            new: true,
        }
    }
}

/// Drain routes tokens that carry digits (or are masks) through the wildcard branch, so
/// ids in leading positions do not split the tree.
fn routes_as_wildcard(token: &str) -> bool {
    token.starts_with('<') && token.ends_with('>') || token.bytes().any(|b| b.is_ascii_digit())
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Copies `line` into `out` with variable parts replaced by typed masks. One pass over
/// the bytes; a candidate only starts where a word starts.
fn mask_into(line: &str, out: &mut String) {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_word(bytes[i - 1]);
        if at_word_start
            && (bytes[i].is_ascii_hexdigit() || bytes[i] == b'-')
            && let Some((end, mask)) = match_variable(bytes, i)
        {
            out.push_str(&line[copied..i]);
            out.push_str(mask);
            i = end;
            copied = end;
            continue;
        }
        i += 1;
    }
    out.push_str(&line[copied..]);
}

fn run(bytes: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    bytes[from..].iter().take_while(|b| pred(**b)).count()
}

/// Whether a variable (IP, UUID, hex, number) starts at `i` and ends at a word boundary.
fn match_variable(bytes: &[u8], i: usize) -> Option<(usize, &'static str)> {
    let boundary = |end: usize| end >= bytes.len() || !is_word(bytes[end]);
    // UUID: 8-4-4-4-12 hex digits.
    let mut p = i;
    let mut ok = true;
    for (k, len) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if run(bytes, p, |b| b.is_ascii_hexdigit()) < len {
            ok = false;
            break;
        }
        p += len;
        if k < 4 {
            if bytes.get(p) != Some(&b'-') {
                ok = false;
                break;
            }
            p += 1;
        }
    }
    if ok && boundary(p) {
        return Some((p, "<UUID>"));
    }
    // IPv4 with an optional port.
    let mut p = i;
    let mut parts = 0;
    while parts < 4 {
        let n = run(bytes, p, |b| b.is_ascii_digit());
        if n == 0 || n > 3 {
            break;
        }
        p += n;
        parts += 1;
        if parts < 4 {
            if bytes.get(p) != Some(&b'.') {
                break;
            }
            p += 1;
        }
    }
    if parts == 4 && (p >= bytes.len() || bytes[p] != b'.') {
        if bytes.get(p) == Some(&b':') && run(bytes, p + 1, |b| b.is_ascii_digit()) > 0 {
            p += 1 + run(bytes, p + 1, |b| b.is_ascii_digit());
        }
        if boundary(p) {
            return Some((p, "<IP>"));
        }
    }
    // 0x-prefixed hex, or a long hex run holding a digit (hashes, container ids).
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        let n = run(bytes, i + 2, |b| b.is_ascii_hexdigit());
        if n > 0 && boundary(i + 2 + n) {
            return Some((i + 2 + n, "<HEX>"));
        }
    }
    let n = run(bytes, i, |b| b.is_ascii_hexdigit());
    if n >= 8 && boundary(i + n) && bytes[i..i + n].iter().any(u8::is_ascii_digit) {
        return Some((i + n, "<HEX>"));
    }
    // Numbers: optional sign, digits, optional fraction.
    let mut p = i;
    if bytes[p] == b'-' {
        p += 1;
    }
    let n = run(bytes, p, |b| b.is_ascii_digit());
    if n == 0 {
        return None;
    }
    p += n;
    if bytes.get(p) == Some(&b'.') {
        let f = run(bytes, p + 1, |b| b.is_ascii_digit());
        if f > 0 {
            p += 1 + f;
        }
    }
    // Units glued to a number (`12ms`, `3.5s`, `512Mi`) keep their letters.
    if boundary(p) {
        return Some((p, "<NUM>"));
    }
    let letters = run(bytes, p, |b| b.is_ascii_alphabetic());
    if letters > 0 && letters <= 3 && boundary(p + letters) {
        return Some((p, "<NUM>"));
    }
    None
}

/// A crash signature found in a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashSignature {
    /// The kernel or kubelet killed the container for memory (`OOMKilled`, `Out of memory`).
    OomKilled,
    /// Kubernetes restarts it in a loop (`CrashLoopBackOff`, `Back-off restarting`).
    CrashLoop,
    /// A panic (`panic:`, `panicked at`, `fatal error:`).
    Panic,
    /// A stack trace (`Traceback`, `Exception in thread`, `\tat `, `goroutine N [`).
    StackTrace,
}

/// Crash signatures of one line.
pub fn crash_signatures(line: &str) -> impl Iterator<Item = CrashSignature> + '_ {
    const PATTERNS: &[(&str, CrashSignature)] = &[
        ("OOMKilled", CrashSignature::OomKilled),
        ("Out of memory", CrashSignature::OomKilled),
        ("out of memory", CrashSignature::OomKilled),
        ("CrashLoopBackOff", CrashSignature::CrashLoop),
        (
            "Back-off restarting failed container",
            CrashSignature::CrashLoop,
        ),
        ("panic:", CrashSignature::Panic),
        ("panicked at", CrashSignature::Panic),
        ("fatal error:", CrashSignature::Panic),
        (
            "Traceback (most recent call last)",
            CrashSignature::StackTrace,
        ),
        ("Exception in thread", CrashSignature::StackTrace),
        ("\tat ", CrashSignature::StackTrace),
        ("goroutine ", CrashSignature::StackTrace),
    ];
    PATTERNS
        .iter()
        .filter(move |(p, _)| line.contains(p))
        .map(|(_, s)| *s)
}

/// Severity of a line from its level label or, failing that, its words.
fn line_level(line: &str, level: Option<&str>) -> (bool, bool) {
    if let Some(l) = level {
        let l = l.to_ascii_lowercase();
        return (
            matches!(
                l.as_str(),
                "error" | "err" | "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert"
            ),
            matches!(l.as_str(), "warn" | "warning"),
        );
    }
    let error = [
        "ERROR",
        "Error",
        "error:",
        "FATAL",
        "Fatal",
        "panic",
        "Exception",
        "CRITICAL",
    ]
    .iter()
    .any(|w| line.contains(w));
    let warn = !error && ["WARN", "Warn", "warning"].iter().any(|w| line.contains(w));
    (error, warn)
}

/// The log features of one window of one entity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogFeatures {
    /// Lines in the window.
    pub lines: u64,
    /// Share of error lines.
    pub error_rate: f64,
    /// Share of warning lines.
    pub warn_rate: f64,
    /// Share of lines that created a template never seen before.
    pub new_template_rate: f64,
    /// Distinct templates in the window.
    pub distinct_templates: usize,
    /// Lines per crash signature.
    pub oom_killed: u64,
    /// Lines showing a crash loop.
    pub crash_loop: u64,
    /// Lines showing a panic.
    pub panics: u64,
    /// Lines of stack traces.
    pub stack_traces: u64,
    /// Lines per template id in this window, most frequent first.
    pub templates: Vec<(TemplateId, u64)>,
}

/// Accumulates one window of lines through a shared miner.
#[derive(Debug, Default, Clone)]
pub struct LogWindow {
    counts: HashMap<TemplateId, u64, RandomState>,
    features: LogFeatures,
    errors: u64,
    warns: u64,
    new_templates: u64,
}

impl LogWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one line (with its level label, when the source had one).
    pub fn add(&mut self, drain: &mut Drain, line: &str, level: Option<&str>) -> Match {
        let m = drain.add(line);
        *self.counts.entry(m.template).or_insert(0) += 1;
        let f = &mut self.features;
        f.lines += 1;
        let (error, warn) = line_level(line, level);
        self.errors += u64::from(error);
        self.warns += u64::from(warn);
        self.new_templates += u64::from(m.new);
        for s in crash_signatures(line) {
            match s {
                CrashSignature::OomKilled => f.oom_killed += 1,
                CrashSignature::CrashLoop => f.crash_loop += 1,
                CrashSignature::Panic => f.panics += 1,
                CrashSignature::StackTrace => f.stack_traces += 1,
            }
        }
        m
    }

    /// Lines so far that are errors or carry a crash signature (OOM kill, crash loop,
    /// panic); cheap, for screening.
    pub fn alarming_lines(&self) -> u64 {
        let f = &self.features;
        self.errors + f.oom_killed + f.crash_loop + f.panics
    }

    /// The features of the lines so far.
    pub fn features(&self) -> LogFeatures {
        let mut f = self.features.clone();
        let n = f.lines.max(1) as f64;
        f.error_rate = self.errors as f64 / n;
        f.warn_rate = self.warns as f64 / n;
        f.new_template_rate = self.new_templates as f64 / n;
        f.distinct_templates = self.counts.len();
        let mut t: Vec<(TemplateId, u64)> = self.counts.iter().map(|(k, v)| (*k, *v)).collect();
        t.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        f.templates = t;
        f
    }
}

#[cfg(test)]
mod tests;
