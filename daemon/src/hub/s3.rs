//! The S3 hub: an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO,
//! Garage) through the `object_store` crate.
//!
//! The [`Hub`] interface is blocking; this module owns a small tokio runtime
//! and blocks on it, so it must be called from plain threads (the database
//! workers, `syncd once`), never from inside an async task. Every object is
//! written in one request (or one multipart upload), which S3 makes atomic.
//! Secrets are never logged nor shown in the URL.

use super::{Hub, HubEntry, HubError, S3Options};
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Uploads above this size use a multipart upload.
const MULTIPART_THRESHOLD: u64 = 8 << 20;
const PART_SIZE: usize = 8 << 20;

pub struct S3Hub {
    url: String,
    prefix: String,
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl S3Hub {
    pub fn open(url: &str, opts: &S3Options) -> Result<S3Hub, HubError> {
        let invalid = |reason: &str| HubError::InvalidUrl { url: url.to_string(), reason: reason.to_string() };
        let rest = url.strip_prefix("s3://").ok_or_else(|| invalid("expected s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket name: use s3://bucket/prefix"));
        }
        // reqwest's rustls needs a process-wide crypto provider; installing
        // it twice is harmless (the second call is refused and ignored).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Short timeouts and few retries: an outage must be noticed within
        // seconds so the daemon keeps working offline.
        // Client options first: they carry allow_http, set below.
        builder = builder
            .with_client_options(
                ClientOptions::new().with_connect_timeout(Duration::from_secs(3)).with_timeout(Duration::from_secs(30)),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
                backoff: Default::default(),
            });
        let endpoint = opts.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e).with_virtual_hosted_style_request(false);
            if e.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        if let Some(r) = &opts.region {
            builder = builder.with_region(r);
        } else if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        if let Some(k) = &opts.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(s) = &opts.secret_access_key {
            builder = builder.with_secret_access_key(s);
        }
        if let Some(h) = opts.allow_http {
            builder = builder.with_allow_http(h);
        }
        let store = builder.build().map_err(|e| invalid(&e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("syncd-s3")
            .build()
            .map_err(|e| HubError::Io { path: url.into(), reason: e.to_string() })?;
        Ok(S3Hub { url: url.to_string(), prefix: prefix.trim_matches('/').to_string(), store, runtime })
    }

    fn key(&self, rel: &str) -> StorePath {
        if self.prefix.is_empty() { StorePath::from(rel) } else { StorePath::from(format!("{}/{rel}", self.prefix)) }
    }

    fn err(&self, rel: &str, e: object_store::Error) -> HubError {
        match e {
            object_store::Error::NotFound { .. } => HubError::NotFound(rel.to_string()),
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
                HubError::AlreadyExists(rel.to_string())
            }
            other => {
                let text = other.to_string();
                let short: String = text.chars().take(300).collect();
                if text.contains("403") || text.contains("AccessDenied") || text.contains("NoSuchBucket") {
                    HubError::Io { path: rel.to_string(), reason: short }
                } else {
                    HubError::Unreachable { url: self.url.clone(), reason: short }
                }
            }
        }
    }
}

impl Hub for S3Hub {
    fn url(&self) -> &str {
        &self.url
    }

    fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<HubEntry>, HubError> {
        let prefix = self.key(dir);
        let offset = after.map(|a| self.key(&format!("{dir}/{a}")));
        self.runtime.block_on(async {
            let mut stream = match &offset {
                Some(o) => self.store.list_with_offset(Some(&prefix), o),
                None => self.store.list(Some(&prefix)),
            };
            let mut out = Vec::new();
            let depth = prefix.parts().count();
            while let Some(item) = stream.next().await {
                let meta = item.map_err(|e| self.err(dir, e))?;
                let parts: Vec<_> = meta.location.parts().collect();
                if parts.len() != depth + 1 {
                    continue;
                }
                let name = parts[depth].as_ref().to_string();
                if name.starts_with('.') || after.is_some_and(|a| name.as_str() <= a) {
                    continue;
                }
                out.push(HubEntry { name, size: meta.size, modified: Some(meta.last_modified.into()) });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, HubError> {
        let prefix = self.key(dir);
        self.runtime.block_on(async {
            let listing = self.store.list_with_delimiter(Some(&prefix)).await.map_err(|e| self.err(dir, e))?;
            let mut out: Vec<String> = listing
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .filter(|n| !n.starts_with('.'))
                .collect();
            out.sort();
            Ok(out)
        })
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, HubError> {
        let key = self.key(path);
        self.runtime.block_on(async {
            let r = self.store.get(&key).await.map_err(|e| self.err(path, e))?;
            let bytes = r.bytes().await.map_err(|e| self.err(path, e))?;
            Ok(bytes.to_vec())
        })
    }

    fn get_to_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        let key = self.key(path);
        let tmp = local.with_extension("part");
        let io = |e: std::io::Error| HubError::Io { path: local.display().to_string(), reason: e.to_string() };
        self.runtime.block_on(async {
            let r = self.store.get(&key).await.map_err(|e| self.err(path, e))?;
            let mut stream = r.into_stream();
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.err(path, e))?;
                f.write_all(&chunk).map_err(io)?;
            }
            f.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
            std::fs::rename(&tmp, local).map_err(io)
        })
    }

    fn put_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), HubError> {
        let key = self.key(path);
        self.runtime.block_on(async {
            self.store
                .put(&key, PutPayload::from(Bytes::copy_from_slice(bytes)))
                .await
                .map_err(|e| self.err(path, e))?;
            Ok(())
        })
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<(), HubError> {
        let key = self.key(path);
        self.runtime.block_on(async {
            let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.store.put_opts(&key, payload.clone(), opts).await {
                Ok(_) => Ok(()),
                Err(object_store::Error::NotImplemented { .. }) | Err(object_store::Error::NotSupported { .. }) => {
                    // A server without conditional writes: check, then write.
                    match self.store.head(&key).await {
                        Ok(_) => Err(HubError::AlreadyExists(path.to_string())),
                        Err(object_store::Error::NotFound { .. }) => {
                            self.store.put(&key, payload).await.map_err(|e| self.err(path, e))?;
                            Ok(())
                        }
                        Err(e) => Err(self.err(path, e)),
                    }
                }
                Err(e) => Err(self.err(path, e)),
            }
        })
    }

    fn put_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        let key = self.key(path);
        let io = |e: std::io::Error| HubError::Io { path: local.display().to_string(), reason: e.to_string() };
        let size = std::fs::metadata(local).map_err(io)?.len();
        if size <= MULTIPART_THRESHOLD {
            let bytes = std::fs::read(local).map_err(io)?;
            return self.put_atomic(path, &bytes);
        }
        self.runtime.block_on(async {
            let upload = self.store.put_multipart(&key).await.map_err(|e| self.err(path, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut f = std::fs::File::open(local).map_err(io)?;
            let mut buf = vec![0u8; PART_SIZE];
            loop {
                let n = f.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(4).await.map_err(|e| self.err(path, e))?;
                writer.write(&buf[..n]);
            }
            writer.finish().await.map_err(|e| self.err(path, e))?;
            Ok(())
        })
    }

    fn delete(&self, path: &str) -> Result<(), HubError> {
        let key = self.key(path);
        self.runtime.block_on(async {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err(path, e)),
            }
        })
    }
}
