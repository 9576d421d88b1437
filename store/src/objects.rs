//! Object storage through the `object_store` crate: a local folder by default, any
//! S3-compatible store when configured. Models live here under
//! `models/KIND/VERSION.json` with `models/KIND/LATEST` naming the current one, so every
//! replica loads the same model at start.

use std::sync::Arc;

use crate::Error;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload};

/// A configured object store.
#[derive(Debug, Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    url: String,
}

impl Objects {
    /// Opens `url`: a folder (created when missing) or `file:///…`, `s3://bucket[/prefix]`
    /// (region, credentials and endpoint from `AWS_*` variables, e.g. `AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP=true` for a local S3 API), or `memory://` for tests.
    pub fn open(url: &str) -> Result<Self, Error> {
        Self::open_with(url, &[])
    }

    /// Like [`open`](Self::open), with S3 settings (`aws_endpoint`, `aws_access_key_id`,
    /// …) given here overriding the environment.
    pub fn open_with(url: &str, s3_options: &[(&str, &str)]) -> Result<Self, Error> {
        let store: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::ObjectStore(format!("`{url}` names no bucket")));
            }
            let mut builder = AmazonS3Builder::from_env();
            for (key, value) in s3_options {
                let key: object_store::aws::AmazonS3ConfigKey = key
                    .parse()
                    .map_err(|e| Error::ObjectStore(format!("S3 option `{key}`: {e}")))?;
                builder = builder.with_config(key, *value);
            }
            let s3 = builder
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| Error::ObjectStore(format!("object store `{url}`: {e}")))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            }
        } else if url == "memory://" {
            Arc::new(InMemory::new())
        } else {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::ObjectStore(format!("object store folder `{dir}`: {e}")))?;
            Arc::new(
                LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| Error::ObjectStore(format!("object store folder `{dir}`: {e}")))?,
            )
        };
        Ok(Self {
            store,
            url: url.to_string(),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes `key`.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| Error::ObjectStore(format!("writing `{key}` to {}: {e}", self.url)))
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self.store.get(&Path::from(key)).await {
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| Error::ObjectStore(format!("reading `{key}`: {e}"))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::ObjectStore(format!(
                "reading `{key}` from {}: {e}",
                self.url
            ))),
        }
    }

    /// Keys under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, Error> {
        use futures_util::TryStreamExt;
        let items: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .map_err(|e| Error::ObjectStore(format!("listing `{prefix}` in {}: {e}", self.url)))?;
        Ok(items.into_iter().map(|m| m.location.to_string()).collect())
    }
}
