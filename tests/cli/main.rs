//! End-to-end tests of the `amdahl` binary as a user runs it: real files, real databases
//! (a fresh SQLite home per test; a fresh PostgreSQL database for the `postgres_` tests),
//! real processes, exit codes and output.

#[path = "../../runner/tests/support/mod.rs"]
#[allow(dead_code)] // this binary uses the PostgreSQL half of the helpers
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use amdahl_executors::testing::LocalObjects;
use support::TestDb;

mod browser;
mod crash;
mod failures;
mod first_steps;
mod house;
mod placement;
mod policy;
mod services;
mod storage;

struct Amdahl {
    home: tempfile::TempDir,
    database_url: Option<String>,
}

impl Amdahl {
    fn sqlite() -> Amdahl {
        Amdahl {
            home: tempfile::tempdir().unwrap(),
            database_url: None,
        }
    }

    fn with_database(url: &str) -> Amdahl {
        Amdahl {
            home: tempfile::tempdir().unwrap(),
            database_url: Some(url.to_string()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_amdahl"));
        cmd.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("AMDAHL_HOME", self.home.path())
            .env_remove("AMDAHL_DATABASE_URL");
        if let Some(url) = &self.database_url {
            cmd.env("AMDAHL_DATABASE_URL", url);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn examples() -> Vec<String> {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("dags/examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .map(|p| format!("dags/examples/{}", p.file_name().unwrap().to_str().unwrap()))
            .collect();
    files.sort();
    assert!(files.len() >= 2);
    files
}

/// The one integer a one-row, one-column Parquet file holds.
fn single_integer(path: &Path) -> i64 {
    use datafusion::arrow::array::Int64Array;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(batches.len(), 1, "{}", path.display());
    let column = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("an Int64 column");
    assert_eq!(column.len(), 1);
    column.value(0)
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Service processes that are killed when the test ends, however it ends.
struct Services(Vec<std::process::Child>);

impl Services {
    fn start(amdahl: &Amdahl, commands: &[&[&str]]) -> Services {
        let mut services = Services(Vec::new());
        for args in commands {
            services.add(amdahl, args);
        }
        services
    }

    fn add(&mut self, amdahl: &Amdahl, args: &[&str]) -> u32 {
        let child = amdahl
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.0.push(child);
        pid
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(amdahl: &Amdahl, run: &str, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let shown = text(&amdahl.run(&["runs", "show", run]).stdout);
        if shown.contains(needle) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "`{needle}` never showed in run {run}:\n{shown}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn runs_of(amdahl: &Amdahl, dag: &str) -> Vec<String> {
    text(&amdahl.run(&["runs", "list", "--dag", dag]).stdout)
        .lines()
        .filter(|l| l.contains(dag))
        .map(str::to_string)
        .collect()
}

impl Amdahl {
    /// The state store this binary uses, opened directly, to check what the CLI cannot show.
    fn store(&self, rt: &tokio::runtime::Runtime) -> amdahl_scheduler::Store {
        let url = self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.home.path().join("amdahl.db").display())
        });
        rt.block_on(amdahl_scheduler::Store::connect(&url)).unwrap()
    }
}

/// The most of `spans` (start, end) that overlap at any moment.
fn most_at_once(spans: &[(i64, i64)]) -> usize {
    // A start is stamped when the claim begins, before its statement may wait for the
    // database's write lock while the previous task's end commits: a hand-off can look a few
    // milliseconds early. Real overlaps in these tests last the tasks' hundreds of ms.
    const SKEW_MS: i64 = 25;
    let mut events: Vec<(i64, i32)> = spans
        .iter()
        .flat_map(|&(start, end)| [(start, 1), ((end - SKEW_MS).max(start), -1)])
        .collect();
    // Ends before starts at the same millisecond: back-to-back is not overlap.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    most as usize
}

fn pgrep(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap()
        .status
        .success()
}

/// An HTTP server on 127.0.0.1 (a thread) that answers 200 to everything and keeps each
/// request's first line and body.
struct Hook {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Hook {
    fn start() -> Hook {
        Hook::on(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// A server on `port` (one that was closed until now).
    fn at(port: u16) -> Hook {
        Hook::on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    fn on(listener: std::net::TcpListener) -> Hook {
        use std::io::{BufRead, Read, Write};
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).ok();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).ok();
                kept.lock().unwrap().push((
                    first.trim().to_string(),
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .ok();
            }
        });
        Hook { url, requests }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }
}

/// Every row of a task's output folder, as a table.
fn output_rows(dir: &Path) -> String {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut batches = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        batches.extend(reader.map(Result::unwrap));
    }
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The rows of the Parquet objects under `prefix` in the bucket (the manifest left out), as a
/// table.
fn object_rows(s3: &impl LocalObjects, prefix: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for url in rt.block_on(s3.list(prefix)).unwrap() {
        if let Some(name) = url
            .strip_suffix(".parquet")
            .and_then(|u| u.rsplit('/').next())
        {
            let bytes = rt.block_on(s3.get(&url)).unwrap();
            std::fs::write(dir.path().join(format!("{name}.parquet")), bytes).unwrap();
        }
    }
    output_rows(dir.path())
}

/// Two schedulers and three workers, a random one killed with SIGKILL again and again while a
/// 200-task DAG runs (see `tests/cli/crash/mod.rs`): nothing is lost, nothing done twice.
#[test]
fn postgres_kill_9_anywhere_loses_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TestDb::postgres()) else {
        return;
    };
    crash::suite(&db.url, &rt);
    rt.block_on(db.drop_database());
}

/// PostgreSQL crashes and restarts under a running DAG; the services wait it out.
#[test]
fn postgres_a_database_restart_mid_run_is_waited_out() {
    crash::database_restarts();
}
