//! Policy and test files: YAML (one or more documents) or JSON, a file or a folder.
//!
//! A document is one policy, a list of policies, or a mapping with a `policies:` list. Files
//! whose name ends in `_test.yaml`, `_test.yml` or `_test.json` hold test cases instead (see
//! [`crate::testing`]). Hidden files and folders are skipped, which also skips the
//! `..data` folders of a mounted Kubernetes ConfigMap while following its links.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::model::PolicySpec;
use crate::snapshot::{Origin, Policy};

/// Largest policy or test file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The file cannot be used.
    Error,
    /// The file works but probably not as meant.
    Warning,
}

/// A message about a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub level: Level,
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong and what to change.
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn error(path: &Path, message: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub(crate) fn warning(path: &Path, message: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            ..Self::error(path, message)
        }
    }

    fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, ": {level}: {}", self.message)
    }
}

/// The kinds of file in a policy folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// Policies.
    Policies,
    /// Test cases.
    Tests,
    /// Guard-rail invariants (`*_invariants.yaml`).
    Invariants,
}

/// Classifies a path by its name, or `None` when it is not a policy or test file.
pub fn file_kind(path: &Path) -> Option<FileKind> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    let stem = [".yaml", ".yml", ".json"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))?;
    Some(if stem.ends_with("_test") {
        FileKind::Tests
    } else if stem == "invariants" || stem.ends_with("_invariants") {
        FileKind::Invariants
    } else {
        FileKind::Policies
    })
}

/// Every policy or test file under `root` (or `root` itself when it is a file), sorted.
pub fn discover(root: &Path) -> Result<Vec<(PathBuf, FileKind)>, Diagnostic> {
    let meta = std::fs::metadata(root)
        .map_err(|e| Diagnostic::error(root, format!("cannot read: {e}")))?;
    if meta.is_file() {
        let kind = file_kind(root).unwrap_or(FileKind::Policies);
        return Ok(vec![(root.to_path_buf(), kind)]);
    }
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder)
            .map_err(|e| Diagnostic::error(&folder, format!("cannot read folder: {e}")))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| Diagnostic::error(&folder, format!("cannot read folder: {e}")))?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            // `metadata` follows symlinks, as ConfigMap mounts need.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => folders.push(path),
                Ok(_) => {
                    if let Some(kind) = file_kind(&path) {
                        found.push((path, kind));
                    }
                }
                Err(e) => return Err(Diagnostic::error(&path, format!("cannot read: {e}"))),
            }
        }
    }
    found.sort();
    Ok(found)
}

pub(crate) fn read_text(path: &Path) -> Result<String, Diagnostic> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Diagnostic::error(path, format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(
            path,
            format!(
                "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| Diagnostic::error(path, format!("cannot read: {e}")))
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Strips the parser's own " at line L column C" so the position is printed once, in front.
fn bare_message(message: String) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

fn yaml_error(path: &Path, e: serde_norway::Error) -> Diagnostic {
    let location = e.location();
    let d = Diagnostic::error(path, bare_message(e.to_string()));
    match location {
        Some(l) => d.at(l.line(), l.column()),
        None => d,
    }
}

fn json_error(path: &Path, e: serde_json::Error) -> Diagnostic {
    let (line, column) = (e.line(), e.column());
    let d = Diagnostic::error(path, bare_message(e.to_string()));
    if line > 0 { d.at(line, column) } else { d }
}

/// The shape of one document, found before the typed parse so that parse keeps positions.
enum Shape {
    Empty,
    List,
    Wrapped(&'static str),
    Single,
}

fn shape_of_yaml(value: &serde_norway::Value, wrapper: &'static str) -> Shape {
    match value {
        serde_norway::Value::Null => Shape::Empty,
        serde_norway::Value::Sequence(_) => Shape::List,
        serde_norway::Value::Mapping(m) if m.contains_key(wrapper) => Shape::Wrapped(wrapper),
        _ => Shape::Single,
    }
}

fn shape_of_json(value: &serde_json::Value, wrapper: &'static str) -> Shape {
    match value {
        serde_json::Value::Null => Shape::Empty,
        serde_json::Value::Array(_) => Shape::List,
        serde_json::Value::Object(m) if m.contains_key(wrapper) => Shape::Wrapped(wrapper),
        _ => Shape::Single,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoliciesDoc<T> {
    policies: Vec<T>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsDoc<T> {
    tests: Vec<T>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvariantsDoc<T> {
    invariants: Vec<T>,
}

/// Reads every item of type `T` in a file: single items, lists, or lists under `wrapper`.
pub(crate) fn read_items<T: DeserializeOwned>(
    path: &Path,
    wrapper: &'static str,
) -> Result<Vec<T>, Diagnostic> {
    parse_items(path, &read_text(path)?, wrapper)
}

/// Parses every item of type `T` in `text`, which came from `path` (for messages and to tell
/// JSON from YAML).
pub(crate) fn parse_items<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    wrapper: &'static str,
) -> Result<Vec<T>, Diagnostic> {
    let mut items = Vec::new();
    if is_json(path) {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| json_error(path, e))?;
        let shape = shape_of_json(&value, wrapper);
        let parsed: Result<Vec<T>, _> = match shape {
            Shape::Empty => Ok(Vec::new()),
            Shape::List => serde_json::from_str(text),
            Shape::Wrapped("tests") => serde_json::from_str::<TestsDoc<T>>(text).map(|d| d.tests),
            Shape::Wrapped("invariants") => {
                serde_json::from_str::<InvariantsDoc<T>>(text).map(|d| d.invariants)
            }
            Shape::Wrapped(_) => serde_json::from_str::<PoliciesDoc<T>>(text).map(|d| d.policies),
            Shape::Single => serde_json::from_str(text).map(|one| vec![one]),
        };
        items.extend(parsed.map_err(|e| json_error(path, e))?);
        return Ok(items);
    }
    // YAML: one pass to learn each document's shape, one typed pass that keeps positions.
    let mut shapes = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(document).map_err(|e| yaml_error(path, e))?;
        shapes.push(shape_of_yaml(&value, wrapper));
    }
    for (document, shape) in serde_norway::Deserializer::from_str(text).zip(shapes) {
        let parsed: Result<Vec<T>, _> = match shape {
            Shape::Empty => Ok(Vec::new()),
            Shape::List => Vec::<T>::deserialize(document),
            Shape::Wrapped("tests") => TestsDoc::<T>::deserialize(document).map(|d| d.tests),
            Shape::Wrapped("invariants") => {
                InvariantsDoc::<T>::deserialize(document).map(|d| d.invariants)
            }
            Shape::Wrapped(_) => PoliciesDoc::<T>::deserialize(document).map(|d| d.policies),
            Shape::Single => T::deserialize(document).map(|one| vec![one]),
        };
        items.extend(parsed.map_err(|e| yaml_error(path, e))?);
    }
    Ok(items)
}

/// Parses the policies in `text` as if read from `path` (its extension tells JSON from
/// YAML), with the same validation and `file:line:column` diagnostics as a folder.
pub fn parse_policies(path: &Path, text: &str) -> Result<Vec<PolicySpec>, Diagnostic> {
    parse_items(path, text, "policies")
}

/// The policies of a file or folder, ready to compile.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// The policies, in file order; ids are `file:<relative path>#<name>`.
    pub policies: Vec<Policy>,
    /// How many policy files were read.
    pub files: usize,
    /// Warnings (the set is usable).
    pub warnings: Vec<Diagnostic>,
}

/// Reads every policy file under `root`. Any error rejects the whole set: a half-read set
/// could allow what the missing file denies.
pub fn load_policies(root: &Path) -> Result<PolicySet, Vec<Diagnostic>> {
    let files = discover(root).map_err(|d| vec![d])?;
    let base = if root.is_file() {
        root.parent().unwrap_or(Path::new(""))
    } else {
        root
    };
    let mut set = PolicySet::default();
    let mut errors = Vec::new();
    let mut names: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    for (path, kind) in files {
        if kind != FileKind::Policies {
            continue;
        }
        set.files += 1;
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        match read_items::<PolicySpec>(&path, "policies") {
            Ok(specs) => {
                for spec in specs {
                    if let Some(other) = names.get(&spec.name) {
                        errors.push(Diagnostic::error(
                            &path,
                            format!(
                                "policy name `{}` is already used in `{}`; names must be unique",
                                spec.name,
                                other.display()
                            ),
                        ));
                        continue;
                    }
                    names.insert(spec.name.clone(), path.clone());
                    set.policies.push(Policy {
                        id: format!("file:{rel}#{}", spec.name),
                        spec,
                        origin: Origin::File { path: rel.clone() },
                    });
                }
            }
            Err(d) => errors.push(d),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    set.warnings = crate::check::shadowed(&set.policies)
        .into_iter()
        .map(|w| {
            let path = match &w.policy.origin {
                Origin::File { path } => base.join(path),
                _ => root.to_path_buf(),
            };
            Diagnostic::warning(&path, w.message)
        })
        .collect();
    Ok(set)
}

/// Reads every invariant file (`invariants.yaml`, `*_invariants.yaml`) under `root`, with
/// the file each came from. Names must be unique.
pub fn load_invariants(
    root: &Path,
) -> Result<Vec<(PathBuf, crate::invariants::Invariant)>, Vec<Diagnostic>> {
    let files = discover(root).map_err(|d| vec![d])?;
    let mut out: Vec<(PathBuf, crate::invariants::Invariant)> = Vec::new();
    let mut errors = Vec::new();
    for (path, kind) in files {
        if kind != FileKind::Invariants {
            continue;
        }
        match read_items::<crate::invariants::Invariant>(&path, "invariants") {
            Ok(items) => {
                for inv in items {
                    if out.iter().any(|(_, o)| o.name == inv.name) {
                        errors.push(Diagnostic::error(
                            &path,
                            format!("invariant name `{}` is used twice", inv.name),
                        ));
                        continue;
                    }
                    out.push((path.clone(), inv));
                }
            }
            Err(d) => errors.push(d),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn first_error(text: &str, name: &str) -> Diagnostic {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), name, text);
        load_policies(dir.path()).unwrap_err().remove(0)
    }

    const GOOD: &str = "name: ok\ntype: self_healing\neffect: allow\nactions: [scale_up]\n";

    #[test]
    fn reads_single_list_wrapped_and_multi_document_yaml() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(
            dir.path(),
            "b.yml",
            "- {name: b1, type: api_access, effect: deny, actions: ['*']}\n\
             - {name: b2, type: api_access, effect: deny, actions: ['*'], priority: 5}\n",
        );
        write(
            dir.path(),
            "c.yaml",
            "policies:\n  - {name: c1, type: api_access, effect: allow, actions: [x]}\n---\n\
             name: c2\ntype: api_access\neffect: allow\nactions: [y]\n",
        );
        write(
            dir.path(),
            "d.json",
            r#"{"policies": [{"name": "d1", "type": "self_healing", "effect": "deny", "actions": ["z"]}]}"#,
        );
        write(dir.path(), "e_test.yaml", "tests: []\n");
        write(dir.path(), "README.md", "not a policy");
        let set = load_policies(dir.path()).unwrap();
        let names: Vec<&str> = set.policies.iter().map(|p| p.spec.name.as_str()).collect();
        assert_eq!(names, ["ok", "b1", "b2", "c1", "c2", "d1"]);
        assert_eq!(set.files, 4);
        assert_eq!(set.policies[0].id, "file:a.yaml#ok");
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let d = first_error(&format!("{GOOD}colour: red\n"), "p.yaml");
        assert_eq!(d.line, Some(5), "{d}");
        assert!(d.message.contains("colour"), "{d}");
        assert!(
            d.to_string()
                .starts_with(&format!("{}:5:", d.path.display())),
            "{d}"
        );
    }

    #[test]
    fn bad_regex_timezone_window_and_empty_actions_are_named() {
        let d = first_error(
            &format!("{GOOD}conditions:\n  metadata:\n    pod:\n      matches: \"([a-z\"\n"),
            "p.yaml",
        );
        assert!(d.message.contains("invalid regex"), "{d}");
        assert!(d.line.is_some_and(|l| l >= 7), "{d}");

        let d = first_error(
            &format!(
                "{GOOD}conditions:\n  time: {{start: \"09:00\", end: \"17:00\", timezone: Mars/Olympus}}\n"
            ),
            "p.yaml",
        );
        assert!(d.message.contains("unknown timezone `Mars/Olympus`"), "{d}");
        assert_eq!(d.line, Some(6), "{d}");

        let d = first_error(
            &format!("{GOOD}conditions:\n  time: {{start: \"09:00\", end: \"09:00\"}}\n"),
            "p.yaml",
        );
        assert!(d.message.contains("start and end are both `09:00`"), "{d}");
        assert_eq!(d.line, Some(6), "{d}");

        let d = first_error(
            "name: x\ntype: self_healing\neffect: allow\nactions: []\n",
            "p.yaml",
        );
        assert!(d.message.contains("at least one action"), "{d}");
        assert_eq!(d.line, Some(4), "{d}");

        let d = first_error(
            r#"{"name": "x", "type": "self_healing",
"effect": "allow", "actions": ["a"], "conditions": {"metadata": {"n": {"gt": "lots"}}}}"#,
            "p.json",
        );
        assert!(d.message.contains("`gt` needs a number"), "{d}");
        assert_eq!(d.line, Some(2), "{d}");
    }

    #[test]
    fn duplicate_names_across_files_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", GOOD);
        write(dir.path(), "b.yaml", GOOD);
        let errors = load_policies(dir.path()).unwrap_err();
        assert!(errors[0].message.contains("already used"), "{}", errors[0]);
    }
}
