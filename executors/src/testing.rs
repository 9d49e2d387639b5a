//! For tests (this crate's and others'): real object storage servers on this machine, an
//! S3-compatible one (moto) and Azure's (Azurite), behind one [`LocalObjects`] interface.

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
        let port = free_port()?;
        let program = std::env::var("AMDAHL_TEST_MOTO").unwrap_or_else(|_| "moto_server".into());
        let child = serve(
            &program,
            &["-H", "127.0.0.1", "-p", &port.to_string()],
            port,
            "the object storage tests need a local S3 server; install it with `pip install 'moto[server]'`",
        )?;
        Ok(LocalS3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }
}

/// A local object storage server: where it is, and what a test does with it.
#[allow(async_fn_in_trait)] // test support: the futures need not be Send
pub trait LocalObjects {
    /// Creates a bucket (a container, on Azure).
    fn create_bucket(&self, bucket: &str) -> Result<(), String>;

    /// Dataset `options:` that reach this server.
    fn options(&self) -> BTreeMap<String, String>;

    /// The same as the standard environment of a process (for `amdahl` run as a child).
    fn env(&self) -> Vec<(&'static str, String)>;

    /// The location of `url` on this server.
    fn location(&self, url: &str) -> ObjectLocation {
        ObjectLocation {
            url: url.to_string(),
            options: self.options(),
        }
    }

    /// Stores `bytes` at `url` (`s3://bucket/key`).
    async fn put(&self, url: &str, bytes: Vec<u8>) -> Result<(), String> {
        let (store, _, key) = crate::objects::store(&self.location(url))?;
        store
            .put(&key, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("put {url}: {e}"))
    }

    /// The bytes of the object at `url`.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let (store, _, key) = crate::objects::store(&self.location(url))?;
        let got = store
            .get(&key)
            .await
            .map_err(|e| format!("get {url}: {e}"))?;
        let bytes = got.bytes().await.map_err(|e| format!("get {url}: {e}"))?;
        Ok(bytes.to_vec())
    }

    /// The URLs of every object under the prefix `url`, sorted.
    async fn list(&self, url: &str) -> Result<Vec<String>, String> {
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

impl LocalObjects for LocalS3 {
    /// Creates a bucket (an unsigned `PUT /bucket`, which the test server accepts).
    fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let status = empty_put(&self.endpoint, &format!("/{bucket}"))?;
        if status.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("creating bucket {bucket}: {status}"))
        }
    }

    /// Settings that reach this server: its endpoint and the (ignored) test credentials.
    fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("endpoint".to_string(), self.endpoint.clone()),
            ("region".to_string(), "us-east-1".to_string()),
            ("access_key_id".to_string(), "testing".to_string()),
            ("secret_access_key".to_string(), "testing".to_string()),
        ])
    }

    /// The same as the standard environment of a process (for `amdahl` run as a child).
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An empty `PUT` of `target` on the server at `endpoint` (`http://HOST:PORT`); its status
/// line.
fn empty_put(endpoint: &str, target: &str) -> Result<String, String> {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    write!(
        stream,
        "PUT {target} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(response.lines().next().unwrap_or("no answer").to_string())
}

/// A free port on 127.0.0.1 (free when asked; the server takes it right after).
fn free_port() -> Result<u16, String> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port())
}

/// Starts `program` and waits until it listens on `port` (at most 60 s); `hint` says how to
/// install it when it cannot start. Tests that need it then fail rather than skip.
fn serve(program: &str, args: &[&str], port: u16, hint: &str) -> Result<Child, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start `{program}` ({e}): {hint}"))?;
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("`{program}` exited at start: {status}"));
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{program}` did not listen on port {port} within 60 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

/// Azurite's Blob service (from npm: `npm install -g azurite`; `AMDAHL_TEST_AZURITE` names
/// another program) on a free local port, in memory, stopped when dropped. It knows one
/// account, `devstoreaccount1`, with Azure's published development key.
pub struct LocalAzure {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// The account and key every Azure storage emulator uses (published by Microsoft).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// An account SAS (blob service; read, write, delete, list, add, create; until 2099) signed
/// with that key: what lets a plain HTTP request create a container.
const AZURITE_SAS: &str = "sv=2021-08-06&ss=b&srt=sco&spr=https%2Chttp&se=2099-01-01T00%3A00%3A00Z\
                           &sp=rwdlac&sig=kV1%2FDJNn7340SUtIltqF6L9gEwifTOYTqBxfQeMSrhM%3D";

impl LocalAzure {
    pub fn start() -> Result<Self, String> {
        let port = free_port()?;
        let program =
            std::env::var("AMDAHL_TEST_AZURITE").unwrap_or_else(|_| "azurite-blob".into());
        let port_text = port.to_string();
        let child = serve(
            &program,
            &[
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port_text,
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ],
            port,
            "the Azure storage tests need Azurite; install it with `npm install -g azurite`",
        )?;
        Ok(LocalAzure {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl LocalObjects for LocalAzure {
    /// Creates a container (`az://CONTAINER/…`).
    fn create_bucket(&self, container: &str) -> Result<(), String> {
        let status = empty_put(
            &self.endpoint,
            &format!("/{AZURITE_ACCOUNT}/{container}?restype=container&{AZURITE_SAS}"),
        )?;
        if status.starts_with("HTTP/1.1 201") {
            Ok(())
        } else {
            Err(format!("creating container {container}: {status}"))
        }
    }

    /// The account, its key and the emulator's address, as dataset options.
    fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("account_name".to_string(), AZURITE_ACCOUNT.to_string()),
            ("access_key".to_string(), AZURITE_KEY.to_string()),
            (
                "endpoint".to_string(),
                format!("{}/{AZURITE_ACCOUNT}", self.endpoint),
            ),
            ("allow_http".to_string(), "true".to_string()),
        ])
    }

    /// How a user points the Azure tools at the emulator.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone()),
        ]
    }
}

impl Drop for LocalAzure {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Google Cloud Storage as the `gs://` client speaks to it, through the XML API, which is
/// S3's: served here by the local S3 server. (No Google emulator that can be installed from a
/// package registry serves the XML API's uploads.) Starting one sets
/// `GOOGLE_OAUTH_ACCESS_TOKEN` in this process, since a credential never travels in dataset
/// options; nextest runs each test in a process of its own.
pub struct LocalGcs {
    s3: LocalS3,
}

impl LocalGcs {
    pub fn start() -> Result<Self, String> {
        let s3 = LocalS3::start()?;
        // SAFETY: test support, called before the test starts any thread that reads the
        // environment.
        unsafe {
            std::env::set_var(crate::objects::GOOGLE_ACCESS_TOKEN_ENV, "testing");
        }
        Ok(LocalGcs { s3 })
    }
}

impl LocalObjects for LocalGcs {
    fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        self.s3.create_bucket(bucket)
    }

    /// The server's address for the XML API.
    fn options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("base_url".to_string(), self.s3.endpoint.clone()),
            ("allow_http".to_string(), "true".to_string()),
        ])
    }

    /// How a user points the `gs://` client at such a server, with an access token.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GOOGLE_BASE_URL", self.s3.endpoint.clone()),
            ("GOOGLE_ALLOW_HTTP", "true".into()),
            (crate::objects::GOOGLE_ACCESS_TOKEN_ENV, "testing".into()),
        ]
    }
}
