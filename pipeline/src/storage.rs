//! The warehouse: one root URL, one object store, fixed prefixes under it (DESIGN.md).
//!
//! Three backends sit behind the same [`Warehouse`]: the local filesystem (`file://`, the embedded
//! default), memory (`memory://`, tests) and any S3-compatible server (`s3://bucket/prefix`).
//! Keys handed to and returned by [`Warehouse::store`] are relative to the warehouse root.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore};
use url::Url;

use crate::config::Config;
use crate::error::{Error, Result};

/// Top-level prefixes of the warehouse layout.
pub mod prefix {
    /// Contributor drops: `inbox/<datanet>/<0xaddress>/<file>`.
    pub const INBOX: &str = "inbox";
    /// Delta tables: `tables/<layer>/<table>/`.
    pub const TABLES: &str = "tables";
    /// Trained adapters: `adapters/<datanet>/<version>/`.
    pub const ADAPTERS: &str = "adapters";
    /// Base models in Hugging Face layout: `models/<name>/`.
    pub const MODELS: &str = "models";
    /// Settlement artifacts: `epochs/<epoch>/`.
    pub const EPOCHS: &str = "epochs";
}

/// A warehouse root with its object store.
#[derive(Clone, Debug)]
pub struct Warehouse {
    url: Url,
    root_store: Arc<dyn ObjectStore>,
    store: Arc<dyn ObjectStore>,
}

impl Warehouse {
    /// Open the warehouse named by `config.warehouse` (creating a local directory if needed).
    pub fn open(config: &Config) -> Result<Warehouse> {
        let raw = config.warehouse.trim();
        let url = if raw.contains("://") {
            Url::parse(raw).map_err(|e| Error::WarehouseUrl { url: raw.into(), reason: e.to_string() })?
        } else {
            let path = PathBuf::from(raw);
            let path = if path.is_absolute() { path } else { config.base_dir.join(path) };
            std::fs::create_dir_all(&path)?;
            let path = path.canonicalize()?;
            Url::from_directory_path(&path)
                .map_err(|_| Error::WarehouseUrl { url: raw.into(), reason: "not an absolute path".into() })?
        };
        Self::from_url(url, config)
    }

    fn from_url(mut url: Url, config: &Config) -> Result<Warehouse> {
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let bad = |reason: &str| Error::WarehouseUrl { url: url.to_string(), reason: reason.into() };
        let root_store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let path = url.to_file_path().map_err(|_| bad("not a local path"))?;
                std::fs::create_dir_all(&path)?;
                Arc::new(LocalFileSystem::new())
            }
            "memory" => shared_memory_store(url.host_str().unwrap_or("")),
            "s3" | "s3a" => {
                let bucket = url.host_str().ok_or_else(|| bad("s3 url needs a bucket"))?;
                register_s3_logstore();
                let s3 = &config.s3;
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(&s3.region)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_client_options(ClientOptions::new().with_allow_http(s3.allow_http));
                if !s3.endpoint.is_empty() {
                    b = b.with_endpoint(&s3.endpoint);
                }
                if !s3.access_key_id.is_empty() {
                    b = b.with_access_key_id(&s3.access_key_id);
                }
                if !s3.secret_access_key.is_empty() {
                    b = b.with_secret_access_key(&s3.secret_access_key);
                }
                Arc::new(b.build()?)
            }
            other => return Err(bad(&format!("unsupported scheme `{other}` (use file, memory or s3)"))),
        };
        let prefix = Path::from_url_path(url.path()).map_err(|e| bad(&e.to_string()))?;
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            root_store.clone()
        } else {
            Arc::new(PrefixStore::new(root_store.clone(), prefix))
        };
        Ok(Warehouse { url, root_store, store })
    }

    /// A fresh, private in-memory warehouse (tests).
    pub fn in_memory() -> Warehouse {
        let url = Url::parse("memory:///").expect("static url is valid");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        Warehouse { url, root_store: store.clone(), store }
    }

    /// The warehouse root URL (always ends with `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The store with keys relative to the warehouse root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The store with `/` at the root of the backend (what delta-rs and DataFusion register).
    pub fn root_store(&self) -> &Arc<dyn ObjectStore> {
        &self.root_store
    }

    /// The URL of `key` (relative to the warehouse root), e.g. a table location.
    pub fn url_of(&self, key: &str) -> Result<Url> {
        let key = key.trim_matches('/');
        self.url
            .join(&format!("{key}/"))
            .map_err(|e| Error::Internal(format!("joining `{key}` onto {}: {e}", self.url)))
    }

    /// The local directory of the warehouse, when it is on the filesystem.
    pub fn local_dir(&self) -> Option<PathBuf> {
        (self.url.scheme() == "file").then(|| self.url.to_file_path().ok()).flatten()
    }
}

/// `memory://name` URLs within one process share a store, so separate opens see the same data.
fn shared_memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Arc<dyn ObjectStore>>>> =
        OnceLock::new();
    let map = STORES.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked mid-insert; the map itself is still valid.
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(name.to_string()).or_insert_with(|| Arc::new(InMemory::new())).clone()
}

/// delta-rs only knows `file://` and `memory://` without its `s3` feature (which pulls the AWS SDK
/// for DynamoDB locking). S3 has had conditional writes (`If-None-Match`) since 2024, which
/// object_store uses for `PutMode::Create`, so the default log store is safe for concurrent commits.
fn register_s3_logstore() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        struct S3Factory;
        impl deltalake::logstore::LogStoreFactory for S3Factory {
            fn with_options(
                &self,
                prefixed_store: deltalake::logstore::ObjectStoreRef,
                root_store: deltalake::logstore::ObjectStoreRef,
                location: &Url,
                options: &deltalake::logstore::StorageConfig,
            ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
                Ok(deltalake::logstore::default_logstore(prefixed_store, root_store, location, options))
            }
        }
        for scheme in ["s3://", "s3a://"] {
            if let Ok(u) = Url::parse(scheme) {
                deltalake::logstore::logstore_factories().insert(u, Arc::new(S3Factory));
            }
        }
    });
}
