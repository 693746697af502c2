//! The S3 hub: an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO,
//! Garage, moto) through the `object_store` crate.
//!
//! The [`Hub`] interface is blocking; this module owns a small tokio runtime
//! and blocks on it, so it must be called from plain threads (the database
//! workers, `syncd once`), never from inside an async task. Every object is
//! written in one request (or one multipart upload), which S3 makes atomic,
//! so no temporary names are needed. Requests time out and retry within a
//! few seconds, so an outage turns into [`HubError::Unreachable`] quickly and
//! the daemon keeps working offline. This module never logs nor returns a
//! secret: [`Hub::url`] and every error carry only the bucket, the prefix and
//! the endpoint.

use super::folder::{check_hub_path, temp_path_beside};
use super::{Hub, HubEntry, HubError, S3Options};
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Uploads above this size use a multipart upload, in parts of this size.
const MULTIPART_THRESHOLD: u64 = 8 << 20;
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once: bounds memory to a few parts.
const PARTS_IN_FLIGHT: usize = 2;
/// Puts above this size go through the store for large transfers.
const SMALL_PUT: usize = 1 << 20;

/// Time to open a connection; a black-holed network fails here.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-request limit for listings, heads, deletes and small puts.
const SHORT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// For large transfers, which have no whole-request limit: the longest wait
/// for the response to start, then between two reads of its body. A part
/// upload must finish within it, so it allows ~1 Mbit/s for one part.
const TRANSFER_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A hub in an S3 bucket, below an optional prefix. See the module doc.
pub struct S3Hub {
    url: String,
    /// Where requests go, for error messages (never holds a secret).
    endpoint: String,
    bucket: String,
    /// The key prefix without slashes at either end; empty for the bucket root.
    prefix: String,
    /// Listings, heads, deletes and small objects: short timeouts.
    control: AmazonS3,
    /// Downloads and large uploads: no whole-request timeout, a stall timeout.
    transfer: AmazonS3,
    /// Set once the server has refused a conditional put, so later
    /// [`Hub::put_new`] calls go straight to check-then-put.
    lacks_conditional_put: AtomicBool,
    /// Keys per listing page; `None` is the server's default (1000). Tests
    /// make it small to cover paging.
    list_page_keys: Option<usize>,
    /// `Some` until drop (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Hub {
    /// Opens the hub at `s3://bucket/prefix`. No request is made: an
    /// unreachable endpoint shows up on the first operation.
    pub fn open(url: &str, opts: &S3Options) -> Result<S3Hub, HubError> {
        let (bucket, prefix) = parse_url(url)?;
        let invalid = |reason: String| HubError::InvalidUrl { url: url.to_string(), reason };
        // reqwest's rustls needs a process-wide crypto provider; a second
        // install is refused, which is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

        // The environment first (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
        // AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, ...), then the
        // configuration on top of it.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry_config());
        if let Some(e) = &opts.endpoint {
            builder = builder.with_endpoint(e);
        }
        if let Some(r) = &opts.region {
            builder = builder.with_region(r);
        }
        if let Some(k) = &opts.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(s) = &opts.secret_access_key {
            builder = builder.with_secret_access_key(s);
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        // With a custom endpoint (MinIO, moto, Garage on http://127.0.0.1:9000)
        // path-style requests are the builder's default, which is what those
        // servers expect; AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true still wins.
        let allow_http = opts
            .allow_http
            .or_else(|| {
                builder
                    .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
                    .and_then(|v| parse_bool(&v))
            })
            .unwrap_or_else(|| endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));

        // Client options replace the ones from the environment, so
        // allow_http is carried over explicitly.
        let base = ClientOptions::new().with_allow_http(allow_http).with_connect_timeout(CONNECT_TIMEOUT);
        let control = builder
            .clone()
            .with_client_options(base.clone().with_timeout(SHORT_REQUEST_TIMEOUT))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let transfer = builder
            .with_client_options(base.with_timeout_disabled().with_read_timeout(TRANSFER_STALL_TIMEOUT))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("syncd-s3")
            .build()
            .map_err(|e| HubError::Io { path: url.into(), reason: format!("cannot start the S3 client: {e}") })?;
        Ok(S3Hub {
            url: url.to_string(),
            endpoint: endpoint.map(|e| without_userinfo(&e)).unwrap_or_else(|| "AWS S3".into()),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            control,
            transfer,
            lacks_conditional_put: AtomicBool::new(false),
            list_page_keys: None,
            runtime: Some(runtime),
        })
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        // Panics (a bug in the caller) when called from inside a runtime.
        self.runtime.as_ref().expect("the runtime lives until the hub is dropped").block_on(f)
    }

    /// The object key of a hub path.
    fn key(&self, rel: &str) -> Result<StorePath, HubError> {
        check_hub_path(rel)?;
        Ok(match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => StorePath::from(rel),
            (false, true) => StorePath::from(self.prefix.as_str()),
            (false, false) => StorePath::from(format!("{}/{rel}", self.prefix)),
        })
    }

    /// The listing prefix of a hub folder: its key and a slash, or nothing
    /// for the bucket root.
    fn dir_prefix(&self, dir: &str) -> Result<String, HubError> {
        let key = self.key(dir)?;
        Ok(if key.as_ref().is_empty() { String::new() } else { format!("{}/", key.as_ref()) })
    }

    fn store_for_put(&self, len: usize) -> &AmazonS3 {
        if len <= SMALL_PUT { &self.control } else { &self.transfer }
    }

    fn unreachable(&self, reason: String) -> HubError {
        HubError::Unreachable { url: self.url.clone(), reason }
    }

    fn no_bucket(&self) -> HubError {
        // Like a missing hub folder: transient, so the daemon keeps working
        // and picks the hub up once the bucket is there.
        self.unreachable(format!("the bucket {} does not exist at {}: create it", self.bucket, self.endpoint))
    }

    /// Maps an `object_store` error on `rel` to what the caller acts on.
    fn err(&self, rel: &str, e: object_store::Error) -> HubError {
        use object_store::Error as E;
        let text = chain_text(&e);
        let code = error_code(&text);
        if code.as_deref() == Some("NoSuchBucket") {
            return self.no_bucket();
        }
        match e {
            E::NotFound { .. } => HubError::NotFound(rel.to_string()),
            E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
                HubError::AlreadyExists(rel.to_string())
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => HubError::Io {
                path: rel.to_string(),
                reason: format!(
                    "access denied by {}{}: check the access key, the secret and the bucket policy",
                    self.endpoint,
                    code.map(|c| format!(" ({c})")).unwrap_or_default()
                ),
            },
            other => {
                if let Some((kind, detail)) = network_failure(&other) {
                    let what = match kind {
                        HttpErrorKind::Connect => "cannot connect to",
                        HttpErrorKind::Timeout => "timed out talking to",
                        _ => "lost the connection to",
                    };
                    return self.unreachable(format!("{what} {}: {detail}", self.endpoint));
                }
                match http_status(&text) {
                    // Overloaded or failing server: worth retrying later.
                    Some(s) if s >= 500 || s == 429 || s == 408 => self.unreachable(format!(
                        "{} answered HTTP {s}{}",
                        self.endpoint,
                        code.map(|c| format!(" ({c})")).unwrap_or_default()
                    )),
                    Some(s) => HubError::Io {
                        path: rel.to_string(),
                        reason: format!(
                            "{} answered HTTP {s}{}",
                            self.endpoint,
                            code.map(|c| format!(" ({c})")).unwrap_or_default()
                        ),
                    },
                    None => HubError::Io { path: rel.to_string(), reason: shorten(&text) },
                }
            }
        }
    }

    /// Puts `payload` at `key` unless an object is already there.
    async fn put_if_absent(&self, rel: &str, key: &StorePath, payload: PutPayload) -> Result<(), HubError> {
        let store = self.store_for_put(payload.content_length());
        if !self.lacks_conditional_put.load(Ordering::Relaxed) {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match store.put_opts(key, payload.clone(), opts).await {
                Ok(_) => return Ok(()),
                Err(e) if is_unsupported(&e) => {
                    tracing::info!(hub = %self.url, "the S3 server has no conditional puts; checking before each put");
                    self.lacks_conditional_put.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(self.err(rel, e)),
            }
        }
        // Check, then put: the race this leaves needs two writers of one
        // file, which the hub layout rules out.
        match self.control.head(key).await {
            Ok(_) => Err(HubError::AlreadyExists(rel.to_string())),
            Err(object_store::Error::NotFound { .. }) => {
                store.put(key, payload).await.map_err(|e| self.err(rel, e))?;
                Ok(())
            }
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Streams a local file into a multipart upload; the upload is aborted
    /// (its parts freed) on any failure.
    async fn upload_multipart(&self, rel: &str, key: &StorePath, local: &Path) -> Result<(), HubError> {
        let local_err = |e: io::Error| HubError::Io { path: local.display().to_string(), reason: e.to_string() };
        let mut file = std::fs::File::open(local).map_err(local_err)?;
        let upload = self.transfer.put_multipart(key).await.map_err(|e| self.err(rel, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            // Reading blocks this (the caller's) thread only; parts already
            // handed over keep uploading on the runtime's worker.
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(local_err(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.err(rel, e));
            }
            writer.write(&buf[..n]);
        }
        // `finish` aborts the upload itself when it fails.
        writer.finish().await.map_err(|e| self.err(rel, e))?;
        Ok(())
    }
}

impl Drop for S3Hub {
    fn drop(&mut self) {
        // Dropping a runtime waits for its worker, which panics inside an
        // async task; the last handle on a hub may be dropped there (the
        // daemon reloading its configuration). Nothing is in flight once
        // the hub is unused, so not waiting loses nothing.
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                drop(runtime);
            }
        }
    }
}

impl Hub for S3Hub {
    fn url(&self) -> &str {
        &self.url
    }

    fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<HubEntry>, HubError> {
        let prefix = self.dir_prefix(dir)?;
        // start-after pushes `after` to the server: a poll costs one request
        // per 1000 new files, not a walk over every file ever published.
        // The "/" delimiter keeps sub-folders' objects out of the answer.
        let offset = after.map(|a| format!("{prefix}{a}"));
        self.block_on(async {
            let mut out = Vec::new();
            let mut page_token = None;
            loop {
                let opts = PaginatedListOptions {
                    offset: offset.clone(),
                    delimiter: Some("/".into()),
                    page_token: page_token.take(),
                    max_keys: self.list_page_keys,
                    ..Default::default()
                };
                let page = self
                    .control
                    .list_paginated((!prefix.is_empty()).then_some(prefix.as_str()), opts)
                    .await
                    .map_err(|e| self.err(dir, e))?;
                for meta in page.result.objects {
                    let Some(name) = meta.location.as_ref().strip_prefix(prefix.as_str()) else { continue };
                    if name.is_empty()
                        || name.contains('/')
                        || name.starts_with('.')
                        || after.is_some_and(|a| name <= a)
                    {
                        continue;
                    }
                    out.push(HubEntry {
                        name: name.to_string(),
                        size: meta.size,
                        modified: Some(meta.last_modified.into()),
                    });
                }
                match page.page_token {
                    Some(t) => page_token = Some(t),
                    None => break,
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, HubError> {
        let key = self.key(dir)?;
        self.block_on(async {
            let prefix = (!key.as_ref().is_empty()).then_some(&key);
            let listing = self.control.list_with_delimiter(prefix).await.map_err(|e| self.err(dir, e))?;
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
        let key = self.key(path)?;
        self.block_on(async {
            let r = self.transfer.get(&key).await.map_err(|e| self.err(path, e))?;
            let bytes = r.bytes().await.map_err(|e| self.err(path, e))?;
            Ok(bytes.to_vec())
        })
    }

    fn get_to_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        let key = self.key(path)?;
        let local_err = |e: io::Error| HubError::Io { path: local.display().to_string(), reason: e.to_string() };
        let tmp = temp_path_beside(local);
        let result = self.block_on(async {
            let r = self.transfer.get(&key).await.map_err(|e| self.err(path, e))?;
            let mut stream = r.into_stream();
            let mut file = io::BufWriter::new(std::fs::File::create(&tmp).map_err(local_err)?);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.err(path, e))?;
                file.write_all(&chunk).map_err(local_err)?;
            }
            let file = file.into_inner().map_err(|e| local_err(e.into_error()))?;
            file.sync_all().map_err(local_err)?;
            drop(file);
            std::fs::rename(&tmp, local).map_err(local_err)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn put_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), HubError> {
        let key = self.key(path)?;
        let store = self.store_for_put(bytes.len());
        self.block_on(async {
            store.put(&key, PutPayload::from(Bytes::copy_from_slice(bytes))).await.map_err(|e| self.err(path, e))?;
            Ok(())
        })
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<(), HubError> {
        let key = self.key(path)?;
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        self.block_on(self.put_if_absent(path, &key, payload))
    }

    fn put_file(&self, path: &str, local: &Path) -> Result<(), HubError> {
        let key = self.key(path)?;
        let local_err = |e: io::Error| HubError::Io { path: local.display().to_string(), reason: e.to_string() };
        let size = std::fs::metadata(local).map_err(local_err)?.len();
        if size <= MULTIPART_THRESHOLD {
            let bytes = std::fs::read(local).map_err(local_err)?;
            return self.put_atomic(path, &bytes);
        }
        self.block_on(self.upload_multipart(path, &key, local))
    }

    fn delete(&self, path: &str) -> Result<(), HubError> {
        let key = self.key(path)?;
        self.block_on(async {
            match self.control.delete(&key).await {
                Ok(()) => Ok(()),
                Err(e) => match self.err(path, e) {
                    HubError::NotFound(_) => Ok(()),
                    other => Err(other),
                },
            }
        })
    }
}

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without
/// slashes at either end).
fn parse_url(url: &str) -> Result<(&str, &str), HubError> {
    let invalid = |reason: &str| HubError::InvalidUrl { url: without_userinfo(url), reason: reason.to_string() };
    let rest = url.strip_prefix("s3://").ok_or_else(|| invalid("expected s3://bucket/prefix"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.contains('@') || bucket.contains(':') {
        // Keys in the URL would end up in logs and status output.
        return Err(invalid("put the access key and secret in the configuration, not in the URL"));
    }
    if bucket.is_empty() {
        return Err(invalid("no bucket name: use s3://bucket/prefix"));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() && check_hub_path(prefix).is_err() {
        return Err(invalid("the prefix must be folder names separated by single slashes"));
    }
    Ok((bucket, prefix))
}

/// `scheme://user:secret@host/...` without the `user:secret@`.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => rest[at + 1..].to_string(),
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Few retries within a few seconds: long enough to ride out a dropped
/// connection, short enough that an outage is reported at once.
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(5),
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Every message of an error and its sources, joined.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The kind of a connection-level failure, and the innermost message (for
/// example "Connection refused (os error 111)").
fn network_failure(e: &(dyn std::error::Error + 'static)) -> Option<(HttpErrorKind, String)> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(http) = s.downcast_ref::<HttpError>() {
            let mut innermost: &(dyn std::error::Error + 'static) = http;
            while let Some(next) = innermost.source() {
                innermost = next;
            }
            return Some((http.kind(), shorten(&innermost.to_string())));
        }
        source = s.source();
    }
    None
}

/// The HTTP status in an `object_store` error message ("...status code:
/// 503 Service Unavailable..."); the error type that holds it is private.
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// The S3 error code in a response body (`<Code>NoSuchBucket</Code>`).
fn error_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    (!code.is_empty() && code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric())).then(|| code.to_string())
}

/// True when the server (or our configuration) has no conditional puts.
fn is_unsupported(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. } => true,
        other => {
            let text = chain_text(other);
            http_status(&text) == Some(501) || error_code(&text).as_deref() == Some("NotImplemented")
        }
    }
}

/// One line of at most 300 characters for an error reason.
fn shorten(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut short: String = line.chars().take(300).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(parse_url("s3://b").unwrap(), ("b", ""));
        assert_eq!(parse_url("s3://b/").unwrap(), ("b", ""));
        assert_eq!(parse_url("s3://b/team/x/").unwrap(), ("b", "team/x"));
        assert!(parse_url("s3:///x").is_err());
        assert!(parse_url("s3://b/a//c").is_err());
        assert!(parse_url("s3://b/../c").is_err());
    }

    #[test]
    fn a_secret_in_the_url_is_refused_and_not_repeated() {
        let err = parse_url("s3://AKIA:SECRET@bucket/x").unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
        assert_eq!(without_userinfo("http://u:p@host:9000/x"), "http://host:9000/x");
        assert_eq!(without_userinfo("http://host:9000"), "http://host:9000");
    }

    #[test]
    fn statuses_and_codes_are_read_from_error_messages() {
        let text = "Error performing PUT http://h/b/k in 1ms - Server returned non-2xx status code: \
                    501 Not Implemented: <Error><Code>NotImplemented</Code></Error>";
        assert_eq!(http_status(text), Some(501));
        assert_eq!(error_code(text).as_deref(), Some("NotImplemented"));
        assert_eq!(http_status("no status here"), None);
        assert_eq!(error_code("<Code></Code>"), None);
    }

    #[test]
    fn keys_sit_below_the_prefix() {
        let hub = S3Hub::open("s3://b/team", &S3Options::default()).unwrap();
        assert_eq!(hub.key("db/p/peer.json").unwrap().as_ref(), "team/db/p/peer.json");
        assert_eq!(hub.dir_prefix("db").unwrap(), "team/db/");
        assert_eq!(hub.dir_prefix("").unwrap(), "team/");
        assert!(hub.key("../x").is_err());
        let root = S3Hub::open("s3://b", &S3Options::default()).unwrap();
        assert_eq!(root.dir_prefix("").unwrap(), "");
        assert_eq!(root.dir_prefix("db").unwrap(), "db/");
    }

    #[test]
    fn a_server_without_conditional_puts_is_recognised() {
        let e = object_store::Error::NotImplemented { operation: "put".into(), implementer: "S3".into() };
        assert!(is_unsupported(&e));
        let e = object_store::Error::Generic { store: "S3", source: "status code: 501 Not Implemented".into() };
        assert!(is_unsupported(&e));
        let e = object_store::Error::Generic { store: "S3", source: "status code: 503 Slow Down".into() };
        assert!(!is_unsupported(&e));
    }

    /// A hub on a fresh bucket of the test server of `tests/hub_conformance.rs`.
    fn test_server_hub() -> Option<S3Hub> {
        use std::io::{Read, Write};
        let Ok(endpoint) = std::env::var("SYNCD_TEST_S3_ENDPOINT") else {
            eprintln!("skipped: set SYNCD_TEST_S3_ENDPOINT to test the S3 hub");
            return None;
        };
        let bucket = format!("syncd-unit-{:016x}", rand::random::<u64>());
        let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let opts = S3Options {
            endpoint: Some(endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            allow_http: Some(true),
        };
        Some(S3Hub::open(&format!("s3://{bucket}/x"), &opts).unwrap())
    }

    /// The check-then-put path of `put_new` (moto answers conditional puts,
    /// so the conformance suite only covers the other path).
    #[test]
    fn put_new_without_conditional_puts_still_refuses_to_overwrite() {
        let Some(hub) = test_server_hub() else { return };
        hub.lacks_conditional_put.store(true, Ordering::Relaxed);
        hub.put_new("db/p/changes/1.chg", b"first").unwrap();
        assert!(matches!(hub.put_new("db/p/changes/1.chg", b"other"), Err(HubError::AlreadyExists(_))));
        assert_eq!(hub.get("db/p/changes/1.chg").unwrap(), b"first");
    }

    #[test]
    fn listings_follow_every_page() {
        let Some(mut hub) = test_server_hub() else { return };
        hub.list_page_keys = Some(2);
        for n in 1..=7 {
            hub.put_atomic(&format!("db/p/changes/{n}.chg"), b"x").unwrap();
            hub.put_atomic(&format!("db/p/changes/{n}/deeper.chg"), b"x").unwrap();
        }
        hub.put_atomic("db/p/changes/.tmp", b"x").unwrap();
        let names = |after: Option<&str>| -> Vec<String> {
            hub.list("db/p/changes", after).unwrap().into_iter().map(|e| e.name).collect()
        };
        assert_eq!(names(None), ["1.chg", "2.chg", "3.chg", "4.chg", "5.chg", "6.chg", "7.chg"]);
        assert_eq!(names(Some("2.chg")), ["3.chg", "4.chg", "5.chg", "6.chg", "7.chg"]);
        assert_eq!(names(Some("6.chg")), ["7.chg"]);
    }

    #[test]
    fn dropping_the_hub_inside_an_async_task_does_not_panic() {
        let hub = S3Hub::open("s3://b/x", &S3Options::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move { drop(hub) });
    }
}
