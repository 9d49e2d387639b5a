//! Object storage: datasets at `s3://`, `gs://` and `az://` URLs, read through the
//! `object_store` crate that DataFusion reads with.
//!
//! Credentials come from the worker's environment, as each cloud's own tools read them:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` (an S3-compatible server), `AWS_ALLOW_HTTP`; `GOOGLE_SERVICE_ACCOUNT`
//! (or `GOOGLE_APPLICATION_CREDENTIALS`, or an access token in `GOOGLE_OAUTH_ACCESS_TOKEN`),
//! `GOOGLE_BASE_URL`; `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, …. A dataset's `options:` in the DAG add what is not secret
//! (endpoint, region). Nothing here logs or returns a credential: errors name the URL only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::context::SessionContext;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig, StaticCredentialProvider,
};
use url::Url;

use amdahl_dags::ObjectLocation;

/// An OAuth access token for Google Cloud Storage, used instead of a service account when set.
pub const GOOGLE_ACCESS_TOKEN_ENV: &str = "GOOGLE_OAUTH_ACCESS_TOKEN";

/// A store for the bucket (or container) of `location`, the URL DataFusion knows it by
/// (`scheme://bucket`), and the key within it.
pub fn store(location: &ObjectLocation) -> Result<(Arc<dyn ObjectStore>, Url, ObjectPath), String> {
    let url =
        Url::parse(&location.url).map_err(|e| format!("`{}` is not a URL: {e}", location.url))?;
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("`{}` names no bucket", location.url))?;
    let base = Url::parse(&format!("{}://{bucket}", url.scheme()))
        .map_err(|e| format!("`{}`: {e}", location.url))?;
    let key = ObjectPath::from_url_path(url.path())
        .map_err(|e| format!("`{}`: bad key: {e}", location.url))?;
    let options = &location.options;
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            let mut builder = AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(retries());
            // An `http://` endpoint (a local S3-compatible server) says plain HTTP is meant.
            let endpoint = options.get("endpoint").cloned().or_else(aws_endpoint);
            if endpoint.is_some_and(|e| e.starts_with("http://")) {
                builder = builder.with_allow_http(true);
            }
            let builder = configure(builder, options, |b, k, v| {
                Ok(b.with_config(k.parse().map_err(|e| format!("{e}"))?, v))
            })?;
            Arc::new(builder.build().map_err(|e| failed(location, e))?)
        }
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retries());
            // A short-lived OAuth access token (`gcloud auth print-access-token`) instead of
            // a service account: for a developer's machine, and for a local server that
            // speaks the XML API (`GOOGLE_BASE_URL`).
            if let Some(token) = std::env::var(GOOGLE_ACCESS_TOKEN_ENV)
                .ok()
                .filter(|t| !t.is_empty())
            {
                builder = builder.with_credentials(Arc::new(StaticCredentialProvider::new(
                    GcpCredential { bearer: token },
                )));
            }
            let builder = configure(builder, options, |b, k, v| {
                Ok(b.with_config(k.parse().map_err(|e| format!("{e}"))?, v))
            })?;
            Arc::new(builder.build().map_err(|e| failed(location, e))?)
        }
        "az" | "abfs" | "abfss" | "azure" => {
            let builder = MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retries());
            let builder = configure(builder, options, |b, k, v| {
                Ok(b.with_config(k.parse().map_err(|e| format!("{e}"))?, v))
            })?;
            Arc::new(builder.build().map_err(|e| failed(location, e))?)
        }
        other => return Err(format!("`{other}://` is not an object storage scheme")),
    };
    Ok((store, base, key))
}

/// A request that fails for a passing reason (a dropped connection, a 5xx, throttling) is
/// tried again a few times within 20 s; beyond that the task fails and its own `retries:`
/// take over (the store's default would keep a task waiting for three minutes).
fn retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    }
}

/// The standard variable for an S3-compatible endpoint (object_store reads `AWS_ENDPOINT`
/// and `AWS_ENDPOINT_URL` itself; it is read here to tell whether it is plain HTTP).
fn aws_endpoint() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Applies a dataset's options to a store's builder.
fn configure<B>(
    mut builder: B,
    options: &BTreeMap<String, String>,
    set: impl Fn(B, &str, &str) -> Result<B, String>,
) -> Result<B, String> {
    for (key, value) in options {
        builder = set(builder, key, value).map_err(|e| format!("option `{key}`: {e}"))?;
    }
    Ok(builder)
}

fn failed(location: &ObjectLocation, e: object_store::Error) -> String {
    format!("cannot reach {}: {e}", location.url)
}

/// Makes `location` readable in `ctx` and returns the URL to register it by: the object
/// itself, or its prefix with a trailing `/` when it names a folder (a URL ending in `/`, or
/// one that names no object).
pub async fn register(ctx: &SessionContext, location: &ObjectLocation) -> Result<String, String> {
    let (store, base, key) = store(location)?;
    ctx.register_object_store(&base, store.clone());
    if !location.url.ends_with('/') {
        match store.head(&key).await {
            Ok(_) => return Ok(location.url.clone()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(failed(location, e)),
        }
    }
    // A prefix: it must hold something, or the query would see an empty table.
    let mut listing = store.list(Some(&key));
    match listing.next().await {
        Some(Ok(_)) => Ok(format!("{}/", location.url.trim_end_matches('/'))),
        Some(Err(e)) => Err(failed(location, e)),
        None => Err(format!(
            "nothing at {}: no such object, and no objects under it",
            location.url
        )),
    }
}

/// Bytes stored at `location`: the object's size, or the sum over the objects under the
/// prefix.
pub async fn size(location: &ObjectLocation) -> Result<u64, String> {
    let (store, _, key) = store(location)?;
    if !location.url.ends_with('/') {
        match store.head(&key).await {
            Ok(meta) => return Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(failed(location, e)),
        }
    }
    let mut total = 0u64;
    let mut listing = store.list(Some(&key));
    while let Some(meta) = listing.next().await {
        total += meta.map_err(|e| failed(location, e))?.size;
    }
    Ok(total)
}

/// Whether there is an object at `location`, or (a URL ending in `/`) any object under that
/// prefix. Not found is `false`; other failures (no such bucket, refused credentials) are
/// errors.
pub async fn exists(location: &ObjectLocation) -> Result<bool, String> {
    let (store, _, key) = store(location)?;
    if !location.url.ends_with('/') {
        return match store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(failed(location, e)),
        };
    }
    match store.list(Some(&key)).next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(failed(location, e)),
    }
}

/// The object `name` under the prefix `location` (a URL with or without a trailing `/`),
/// with the same options.
pub fn child(location: &ObjectLocation, name: &str) -> ObjectLocation {
    ObjectLocation {
        url: format!("{}/{name}", location.url.trim_end_matches('/')),
        options: location.options.clone(),
    }
}

/// The object a published output's list of files is written to, last: an output whose
/// manifest is missing was never finished.
pub const MANIFEST: &str = "_SUCCESS";

/// Uploads the files directly in `dir` (hidden ones left out) under the prefix `target`,
/// each streamed in parts, then writes the [`MANIFEST`] naming them with their sizes.
/// Returns the bytes uploaded. Nothing reads an output before the state store records it,
/// so a process that dies half-way leaves objects that nothing names; the manifest tells
/// other readers the same.
pub async fn upload_dir(dir: &std::path::Path, target: &ObjectLocation) -> Result<u64, String> {
    upload_files(dir, target, "").await
}

/// Uploads the files directly in `dir` (hidden ones left out) under the prefix `target`,
/// each streamed in parts, then writes the [`MANIFEST`]: the uploaded files (name, tab,
/// bytes), after the lines of `earlier` (files already there that it still names).
pub async fn upload_files(
    dir: &std::path::Path,
    target: &ObjectLocation,
    earlier: &str,
) -> Result<u64, String> {
    let (store, _, prefix) = store(target)?;
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.')
            && name != MANIFEST
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            files.push(name);
        }
    }
    files.sort();
    let mut manifest = String::new();
    for line in earlier.lines() {
        let name = line.split('\t').next().unwrap_or_default();
        if !files.iter().any(|f| f == name) {
            manifest.push_str(line);
            manifest.push('\n');
        }
    }
    let mut total = 0u64;
    for name in &files {
        let path = dir.join(name);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let key = prefix.clone().join(name.as_str());
        let mut writer = object_store::buffered::BufWriter::new(store.clone(), key);
        let bytes = tokio::io::copy(&mut file, &mut writer).await.map_err(|e| {
            format!(
                "cannot upload {} to {}: {e}",
                path.display(),
                child(target, name).url
            )
        })?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .map_err(|e| {
                format!(
                    "cannot upload {} to {}: {e}",
                    path.display(),
                    child(target, name).url
                )
            })?;
        total += bytes;
        manifest.push_str(&format!("{name}\t{bytes}\n"));
    }
    store
        .put(&prefix.clone().join(MANIFEST), manifest.into_bytes().into())
        .await
        .map_err(|e| failed(target, e))?;
    Ok(total)
}

/// The names of the objects under the prefix `location`, relative to it.
pub async fn list_names(location: &ObjectLocation) -> Result<Vec<String>, String> {
    let (store, _, prefix) = store(location)?;
    let mut listed = store.list(Some(&prefix));
    let mut names = Vec::new();
    while let Some(meta) = listed.next().await {
        let meta = meta.map_err(|e| failed(location, e))?;
        let name = meta
            .location
            .prefix_match(&prefix)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| meta.location.to_string());
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// The text of the object at `location`, or `None` if there is none.
pub async fn read_text(location: &ObjectLocation) -> Result<Option<String>, String> {
    let (store, _, key) = store(location)?;
    match store.get(&key).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(|e| failed(location, e))?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(failed(location, e)),
    }
}

/// The files a prefix's [`MANIFEST`] names, as URLs, when it has one: what a reader of the
/// prefix reads. Objects that no manifest names (an upload that died before writing its
/// manifest, or an overwrite's old files not yet deleted) are never read.
pub async fn manifest_urls(location: &ObjectLocation) -> Result<Option<Vec<String>>, String> {
    if !location.url.ends_with('/') {
        return Ok(None);
    }
    let Some(text) = read_text(&child(location, MANIFEST)).await? else {
        return Ok(None);
    };
    Ok(Some(
        text.lines()
            .filter_map(|line| {
                let name = line.split('\t').next()?.trim();
                (!name.is_empty()).then(|| child(location, name).url)
            })
            .collect(),
    ))
}

/// Deletes the object at `location` (gone already is fine).
pub async fn delete(location: &ObjectLocation) -> Result<(), String> {
    let (store, _, key) = store(location)?;
    match store.delete(&key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(failed(location, e)),
    }
}

/// Deletes every object under the prefix `location`; returns how many went.
pub async fn delete_prefix(location: &ObjectLocation) -> Result<usize, String> {
    let (store, _, prefix) = store(location)?;
    let paths = store
        .list(Some(&prefix))
        .map(|meta| meta.map(|m| m.location))
        .boxed();
    let mut deleted = 0;
    let mut results = store.delete_stream(paths);
    while let Some(result) = results.next().await {
        match result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => return Err(failed(location, e)),
        }
    }
    Ok(deleted)
}

/// Whether the bucket and prefix of `location` can be listed with the credentials at hand.
pub async fn reachable(location: &ObjectLocation) -> Result<(), String> {
    let (store, _, prefix) = store(location)?;
    match store.list(Some(&prefix)).next().await {
        Some(Err(e)) => Err(failed(location, e)),
        _ => Ok(()),
    }
}

/// Copies the object at `location`, or the `.parquet` objects under the prefix, into the
/// folder `dir` (created), streaming each to a file; returns the bytes copied. For the
/// readers that need local files (dense stages).
pub async fn download(location: &ObjectLocation, dir: &std::path::Path) -> Result<u64, String> {
    let (store, _, key) = store(location)?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut objects = Vec::new();
    let single = if location.url.ends_with('/') {
        None
    } else {
        match store.head(&key).await {
            Ok(meta) => Some(meta),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(failed(location, e)),
        }
    };
    match single {
        Some(meta) => objects.push(meta.location),
        None => {
            let mut listing = store.list(Some(&key));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| failed(location, e))?;
                if meta.location.extension() == Some("parquet") {
                    objects.push(meta.location);
                }
            }
        }
    }
    if objects.is_empty() {
        return Err(format!("no Parquet objects at {}", location.url));
    }
    let mut total = 0u64;
    for object in objects {
        let name = object.filename().unwrap_or("part.parquet").to_string();
        let path = dir.join(&name);
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let got = store.get(&object).await.map_err(|e| failed(location, e))?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(location, e))?;
            total += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(total)
}
