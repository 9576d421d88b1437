//! Model files: a versioned envelope around a fitted model, carrying the feature schema
//! it was fitted on so it never scores data of another shape.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Drain, Error, FailureClassifier, IsolationForest, Result};

/// The `format` field of every model file.
pub const FORMAT: &str = "aegis-model";
/// The envelope version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a model file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// [`IsolationForest`].
    IsolationForest,
    /// [`FailureClassifier`].
    FailureClassifier,
    /// [`Drain`] state.
    DrainTemplates,
}

impl ModelKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::IsolationForest => "isolation-forest",
            ModelKind::FailureClassifier => "failure-classifier",
            ModelKind::DrainTemplates => "drain-templates",
        }
    }
}

/// The fitted model itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "model", rename_all = "kebab-case")]
pub enum ModelPayload {
    /// An isolation forest.
    IsolationForest(IsolationForest),
    /// A failure classifier.
    FailureClassifier(FailureClassifier),
    /// A template miner's state.
    DrainTemplates(Drain),
}

/// A model with its metadata, as written to disk, the database or object storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Envelope version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Version of this model: kind, creation time and a content hash, so two replicas
    /// that fit the same model name it alike.
    pub version: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Feature names in column order; rows to score must match.
    pub feature_schema: Vec<String>,
    /// Score at or above which a row is anomalous (isolation forests).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Rows the model was fitted on.
    pub training_rows: usize,
    /// The model.
    #[serde(flatten)]
    pub payload: ModelPayload,
}

/// FNV-1a, a stable content hash for version strings (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl ModelFile {
    /// Wraps a model; `created_at` is RFC 3339 and `created_unix` the same instant.
    pub fn new(
        payload: ModelPayload,
        feature_schema: Vec<String>,
        threshold: Option<f64>,
        training_rows: usize,
        created_at: String,
        created_unix: i64,
    ) -> Result<Self> {
        let width = match &payload {
            ModelPayload::IsolationForest(f) => Some(f.features()),
            ModelPayload::FailureClassifier(_) => Some(crate::FAILURE_FEATURES.len()),
            ModelPayload::DrainTemplates(_) => None,
        };
        if let Some(w) = width
            && w != feature_schema.len()
        {
            return Err(Error::SchemaMismatch(format!(
                "the model has {w} features, the schema names {}",
                feature_schema.len()
            )));
        }
        let body = serde_json::to_vec(&payload).map_err(|e| Error::Format(e.to_string()))?;
        let kind = match &payload {
            ModelPayload::IsolationForest(_) => ModelKind::IsolationForest,
            ModelPayload::FailureClassifier(_) => ModelKind::FailureClassifier,
            ModelPayload::DrainTemplates(_) => ModelKind::DrainTemplates,
        };
        Ok(Self {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            version: format!(
                "{}-{created_unix}-{:08x}",
                kind.as_str(),
                fnv1a(&body) as u32
            ),
            created_at,
            feature_schema,
            threshold,
            training_rows,
            payload,
        })
    }

    /// What the file holds.
    pub fn kind(&self) -> ModelKind {
        match &self.payload {
            ModelPayload::IsolationForest(_) => ModelKind::IsolationForest,
            ModelPayload::FailureClassifier(_) => ModelKind::FailureClassifier,
            ModelPayload::DrainTemplates(_) => ModelKind::DrainTemplates,
        }
    }

    /// Refuses data whose columns are not exactly the model's schema, naming the first
    /// difference.
    pub fn check_schema<S: AsRef<str>>(&self, columns: &[S]) -> Result<()> {
        if columns.len() != self.feature_schema.len() {
            return Err(Error::SchemaMismatch(format!(
                "the model `{}` expects {} columns ({}), the data has {}",
                self.version,
                self.feature_schema.len(),
                self.feature_schema.join(", "),
                columns.len()
            )));
        }
        for (i, (want, got)) in self.feature_schema.iter().zip(columns).enumerate() {
            if want != got.as_ref() {
                return Err(Error::SchemaMismatch(format!(
                    "column {} is `{}`, the model `{}` expects `{want}`",
                    i + 1,
                    got.as_ref(),
                    self.version
                )));
            }
        }
        Ok(())
    }

    /// Serialises to JSON bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Format(e.to_string()))
    }

    /// Parses JSON bytes, checking format and version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let head: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Format(format!("not a model file: {e}")))?;
        if head.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
            return Err(Error::Format(format!(
                "not a model file: `format` is not `{FORMAT}`"
            )));
        }
        let v = head
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if v != u64::from(FORMAT_VERSION) {
            return Err(Error::Format(format!(
                "model file version {v} is not supported by this build (it reads {FORMAT_VERSION})"
            )));
        }
        let mut file: Self = serde_json::from_value(head)
            .map_err(|e| Error::Format(format!("bad model file: {e}")))?;
        match &mut file.payload {
            ModelPayload::IsolationForest(f) => {
                f.validate()?;
                f.prepare();
                if f.features() != file.feature_schema.len() {
                    return Err(Error::Format(
                        "the feature schema does not match the model".into(),
                    ));
                }
            }
            ModelPayload::FailureClassifier(c) => c.validate()?,
            ModelPayload::DrainTemplates(_) => {}
        }
        Ok(file)
    }

    /// Writes the file (via a temporary file and a rename, so readers never see half).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_bytes()?).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|e| Error::Format(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IsolationForestParams, synthetic};

    #[test]
    fn round_trips_and_guards_the_schema() {
        let (x, _) = synthetic::gaussian_with_outliers(1, 500, 3, 0.01);
        let f = IsolationForest::fit(
            x.view(),
            &IsolationForestParams {
                trees: 10,
                ..Default::default()
            },
        )
        .unwrap();
        let schema: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = ModelFile::new(
            ModelPayload::IsolationForest(f.clone()),
            schema.clone(),
            Some(0.6),
            500,
            "2026-11-30T00:00:00Z".into(),
            1,
        )
        .unwrap();
        assert!(
            m.version.starts_with("isolation-forest-1-"),
            "{}",
            m.version
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        m.save(&p).unwrap();
        let back = ModelFile::load(&p).unwrap();
        assert_eq!(back, m);
        let ModelPayload::IsolationForest(g) = &back.payload else {
            panic!("kind")
        };
        assert_eq!(g.score(x.view()).unwrap(), f.score(x.view()).unwrap());
        m.check_schema(&["a", "b", "c"]).unwrap();
        let e = m.check_schema(&["a", "x", "c"]).unwrap_err().to_string();
        assert!(e.contains("column 2 is `x`"), "{e}");
        assert!(m.check_schema(&["a"]).is_err());
        assert!(
            ModelFile::new(
                ModelPayload::IsolationForest(f),
                vec!["a".into()],
                None,
                1,
                String::new(),
                0
            )
            .is_err()
        );
        assert!(ModelFile::from_bytes(b"{\"format\":\"other\"}").is_err());
        let mut hostile: serde_json::Value =
            serde_json::from_slice(&m.to_bytes().unwrap()).unwrap();
        hostile["model"]["splits"]["features"][0] = 7.into();
        let e = ModelFile::from_bytes(&serde_json::to_vec(&hostile).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("feature the model does not have"), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(&m.to_bytes().unwrap()).unwrap();
        v["format_version"] = 99.into();
        let e = ModelFile::from_bytes(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 99"), "{e}");
    }
}
