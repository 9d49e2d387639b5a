//! For tests (this crate's and others'): a real S3-compatible server on this machine.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;

use amdahl_dags::ObjectLocation;

/// `moto_server` (from PyPI: `pip install 'moto[server]'`; `AMDAHL_TEST_MOTO` names another
/// program) listening on a free local port, stopped when dropped. It takes any credentials.
pub struct LocalS3 {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl LocalS3 {
    /// Starts the server and waits until it answers (a clear error when it cannot start:
    /// tests that need it fail rather than skip).
    pub fn start() -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let program = std::env::var("AMDAHL_TEST_MOTO").unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start `{program}` ({e}): the object storage tests need a local \
                     S3 server; install it with `pip install 'moto[server]'`"
                )
            })?;
        let mut server = LocalS3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("`{program}` exited at start: {status}"));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "`{program}` did not listen on port {port} within 60 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Creates a bucket (an unsigned `PUT /bucket`, which the test server accepts).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        if response.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!(
                "creating bucket {bucket}: {}",
                response.lines().next().unwrap_or("no answer")
            ))
        }
    }

    /// Settings that reach this server: its endpoint and the (ignored) test credentials.
    pub fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("endpoint".to_string(), self.endpoint.clone()),
            ("region".to_string(), "us-east-1".to_string()),
            ("access_key_id".to_string(), "testing".to_string()),
            ("secret_access_key".to_string(), "testing".to_string()),
        ])
    }

    /// The same as the standard environment of a process (for `amdahl` run as a child).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// The location of `url` on this server.
    pub fn location(&self, url: &str) -> ObjectLocation {
        ObjectLocation {
            url: url.to_string(),
            options: self.options(),
        }
    }

    /// Stores `bytes` at `url` (`s3://bucket/key`).
    pub async fn put(&self, url: &str, bytes: Vec<u8>) -> Result<(), String> {
        let (store, _, key) = crate::objects::store(&self.location(url))?;
        store
            .put(&key, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("put {url}: {e}"))
    }

    /// The bytes of the object at `url`.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let (store, _, key) = crate::objects::store(&self.location(url))?;
        let got = store
            .get(&key)
            .await
            .map_err(|e| format!("get {url}: {e}"))?;
        let bytes = got.bytes().await.map_err(|e| format!("get {url}: {e}"))?;
        Ok(bytes.to_vec())
    }

    /// The URLs of every object under the prefix `url`, sorted.
    pub async fn list(&self, url: &str) -> Result<Vec<String>, String> {
        let (store, base, key) = crate::objects::store(&self.location(url))?;
        let mut urls = Vec::new();
        let mut listing = store.list(Some(&key));
        while let Some(meta) = futures::StreamExt::next(&mut listing).await {
            let meta = meta.map_err(|e| format!("list {url}: {e}"))?;
            urls.push(format!(
                "{}/{}",
                base.as_str().trim_end_matches('/'),
                meta.location
            ));
        }
        urls.sort();
        Ok(urls)
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
