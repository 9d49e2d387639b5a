//! Notifications end to end: a run fails on the real runner, the scheduler records its
//! notifications once and sends them to a real HTTP server and a real SMTP server on this
//! machine, which answer, fail, hang, redirect in a loop or are not there yet.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amdahl_dags::load_bytes;
use amdahl_runner::Quiet;
use amdahl_scheduler::notify::DeliverySettings;
use amdahl_scheduler::service::SchedulerService;
use amdahl_scheduler::store::{NotificationRecord, NotificationState, Store};
use amdahl_scheduler::{RunState, SystemClock};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{TestDb, runner};

/// A request the test server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers by path: `/ok` 200, `/flaky` 500 twice then
/// 200, `/slow` after 5 s, `/loop` a redirect to itself, anything else 404. It records every
/// request.
pub struct Hooks {
    pub base: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hooks {
    pub async fn start() -> Hooks {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Hooks::serve(listener)
    }

    /// Serves on `addr` (a port a test chose while nothing listened there).
    pub async fn start_on(addr: std::net::SocketAddr) -> Hooks {
        Hooks::serve(TcpListener::bind(addr).await.unwrap())
    }

    fn serve(listener: TcpListener) -> Hooks {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let mut headers = BTreeMap::new();
                    loop {
                        let mut header = String::new();
                        if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            headers
                                .insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                        }
                    }
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    read.read_exact(&mut body).await.ok();
                    let route = path.split('?').next().unwrap_or_default().to_string();
                    let flaky_seen = {
                        let mut log = log.lock().unwrap();
                        log.push(Received {
                            method,
                            path: path.clone(),
                            headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        log.iter().filter(|r| r.path.starts_with("/flaky")).count()
                    };
                    let answer = match route.as_str() {
                        "/ok" => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string(),
                        "/flaky" if flaky_seen <= 2 => {
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops"
                                .into()
                        }
                        "/flaky" => "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into(),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into()
                        }
                        "/loop" => {
                            "HTTP/1.1 302 Found\r\nlocation: /loop\r\ncontent-length: 0\r\n\r\n"
                                .into()
                        }
                        _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found".into(),
                    };
                    // One request per connection, and said so: a client that pooled the
                    // connection would otherwise race the close on its next request.
                    let answer = answer.replacen("\r\n", "\r\nconnection: close\r\n", 1);
                    write.write_all(answer.as_bytes()).await.ok();
                    write.shutdown().await.ok();
                });
            }
        });
        Hooks {
            base,
            received,
            task,
        }
    }

    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .cloned()
            .collect()
    }
}

/// An SMTP server on 127.0.0.1 that accepts every message and keeps its text.
pub struct Mailbox {
    pub url: String,
    pub messages: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mailbox {
    pub async fn start() -> Mailbox {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "smtp://{}?from=amdahl@example.com",
            listener.local_addr().unwrap()
        );
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    write.write_all(b"220 test ESMTP\r\n").await.ok();
                    let mut data: Option<String> = None;
                    let mut envelope = String::new();
                    loop {
                        let mut line = String::new();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(text) = data.as_mut() {
                            if line == ".\r\n" {
                                let message = format!("{envelope}{text}");
                                kept.lock().unwrap().push(message);
                                data = None;
                                write.write_all(b"250 queued\r\n").await.ok();
                            } else {
                                text.push_str(&line);
                            }
                            continue;
                        }
                        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250-test\r\n250 8BITMIME\r\n",
                            "MAIL" | "RCPT" => {
                                envelope.push_str(&line);
                                b"250 ok\r\n"
                            }
                            "DATA" => {
                                data = Some(String::new());
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                write.write_all(b"221 bye\r\n").await.ok();
                                return;
                            }
                            _ => b"502 what\r\n",
                        };
                        write.write_all(reply).await.ok();
                    }
                });
            }
        });
        Mailbox {
            url,
            messages,
            task,
        }
    }
}

/// (level, task, event, notifier, state, attempts, answer) of a notification.
type Row = (String, String, String, i64, String, i64, Option<i64>);

/// Short timeouts and backoff, so that retries happen within a test.
fn quick(smtp_url: Option<String>) -> DeliverySettings {
    DeliverySettings {
        timeout: Duration::from_millis(700),
        max_attempts: 4,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
        parallel: 8,
        ui_url: Some("http://amdahl.example:8080".into()),
        smtp_url,
    }
}

/// Delivers until nothing is pending (or 30 s pass), returning the run's notifications.
async fn deliver_all(
    scheduler: &SchedulerService,
    store: &Store,
    run_id: i64,
) -> Vec<NotificationRecord> {
    let started = std::time::Instant::now();
    loop {
        scheduler.tick().await.unwrap();
        scheduler.deliver_notifications().await.unwrap();
        let notes = store.notifications(run_id).await.unwrap();
        if !notes.is_empty() && notes.iter().all(|n| n.state != NotificationState::Pending) {
            return notes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still pending after 30 s: {notes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scheduler(store: &Store, settings: DeliverySettings) -> SchedulerService {
    SchedulerService::new(
        store.clone(),
        Arc::new(SystemClock),
        Duration::from_millis(50),
        None,
    )
    .with_delivery(settings)
    .unwrap()
}

/// A run whose task retries and whose other task fails: the task's `on_retry` and the DAG's
/// `on_failure` notifiers are each recorded once, however often the scheduler looks, and each
/// delivery ends as its server makes it: delivered, delivered after two 500s, given up on
/// after timing out every time, refused at once for a redirect loop or a 404, an email
/// delivered over SMTP and one with no SMTP server recorded as failed with the reason. The
/// failing notifiers change nothing about the run.
pub async fn notifications_are_recorded_once_and_delivered(db: &TestDb) {
    let store = db.store().await;
    let hooks = Hooks::start().await;
    let mailbox = Mailbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0ps3cret").unwrap();
    let marker = dir.path().join("tried");
    let yaml = format!(
        r#"
dag: alerts
params:
  env: prod
secrets:
  token:
    file: token
on_failure:
  - webhook:
      url: "{base}/ok?token={{{{ secrets.token }}}}"
      headers:
        Content-Type: application/json
        X-Env: "{{{{ params.env }}}}"
      body: '{{"text": "{{{{ dag.id }}}} run {{{{ run.id }}}} {{{{ run.state }}}}: {{{{ task.id }}}} ({{{{ run.url }}}})", "log": {{{{ task.log_tail | tojson }}}}}}'
  - webhook: {{ url: "{base}/flaky" }}
  - webhook: {{ url: "{base}/slow" }}
  - webhook: {{ url: "{base}/loop" }}
  - webhook: {{ url: "{base}/missing" }}
  - email: {{ to: [oncall@example.com], subject: "{{{{ dag.id }}}} failed" }}
tasks:
  flaky:
    retries: 1
    retry_delay: 10ms
    shell: "if [ -e {m} ]; then exit 0; else touch {m}; exit 3; fi"
    on_retry:
      - webhook: {{ url: "{base}/ok", method: PUT }}
  broken:
    shell: "echo about to fail; exit 4"
  cleanup:
    needs: [broken]
    trigger: all_done
    shell: "true"
"#,
        base = hooks.base,
        m = marker.display()
    );
    let dag = load_bytes("alerts.yaml", dir.path(), yaml.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Failed);
    let run_before = store.run(run_id).await.unwrap().unwrap();

    let scheduler = scheduler(&store, quick(Some(mailbox.url.clone())));
    let notes = deliver_all(&scheduler, &store, run_id).await;
    // Looking again, from this scheduler or another, records nothing new.
    scheduler.tick().await.unwrap();
    let other = self::scheduler(&store, quick(None));
    other.tick().await.unwrap();
    assert_eq!(
        store.notifications(run_id).await.unwrap().len(),
        notes.len()
    );

    let summary: Vec<Row> = notes
        .iter()
        .map(|n| {
            (
                n.level.clone(),
                n.task_id.clone(),
                n.event.clone(),
                n.notifier,
                n.state.to_string(),
                n.attempts,
                n.response_code,
            )
        })
        .collect();
    let finished = run_before.finished_at_ms.unwrap();
    let s = |level: &str, task: &str, event: &str, i: i64, state: &str, tries: i64, code| {
        (
            level.to_string(),
            task.to_string(),
            event.to_string(),
            i,
            state.to_string(),
            tries,
            code,
        )
    };
    let mut expected = vec![
        s("task", "flaky", "retry", 0, "delivered", 1, Some(200)),
        s("dag", "", "failure", 0, "delivered", 1, Some(200)),
        s("dag", "", "failure", 1, "delivered", 3, Some(200)),
        s("dag", "", "failure", 2, "failed", 4, None),
        s("dag", "", "failure", 3, "failed", 1, None),
        s("dag", "", "failure", 4, "failed", 1, Some(404)),
        s("dag", "", "failure", 5, "delivered", 1, Some(250)),
    ];
    let mut got = summary.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{notes:#?}");
    assert!(
        notes
            .iter()
            .all(|n| n.event != "failure" || n.occurrence == finished)
    );
    let error_of = |i: i64| {
        notes
            .iter()
            .find(|n| n.event == "failure" && n.notifier == i)
            .and_then(|n| n.last_error.clone())
            .unwrap_or_default()
    };
    assert!(error_of(2).contains("no answer within"), "{}", error_of(2));
    assert!(
        error_of(3).contains("too many redirects"),
        "{}",
        error_of(3)
    );
    assert!(error_of(4).contains("HTTP 404"), "{}", error_of(4));

    // What the servers saw: each delivered notification once, rendered with the secret.
    let ok = hooks.requests("/ok");
    assert_eq!(ok.len(), 2, "{ok:#?}");
    let retry = ok
        .iter()
        .find(|r| r.method == "PUT")
        .expect("the retry notice");
    let body: serde_json::Value = serde_json::from_str(&retry.body).unwrap();
    assert_eq!(
        (
            body["event"].as_str(),
            body["task_id"].as_str(),
            body["attempt"].as_i64()
        ),
        (Some("retry"), Some("flaky"), Some(1))
    );
    let failure = ok
        .iter()
        .find(|r| r.method == "POST")
        .expect("the failure notice");
    assert!(
        failure.path.ends_with("token=t0ps3cret"),
        "{}",
        failure.path
    );
    assert_eq!(
        failure.headers.get("x-env").map(String::as_str),
        Some("prod")
    );
    let text: serde_json::Value = serde_json::from_str(&failure.body).unwrap();
    assert_eq!(
        text["text"].as_str().unwrap(),
        format!("alerts run {run_id} failed: broken (http://amdahl.example:8080/#/runs/{run_id})")
    );
    assert!(
        text["log"].as_str().unwrap().contains("about to fail"),
        "{text}"
    );
    assert_eq!(hooks.requests("/flaky").len(), 3);
    assert_eq!(hooks.requests("/slow").len(), 4);
    assert_eq!(hooks.requests("/missing").len(), 1);
    // The secret is masked in what the store keeps.
    let first = notes
        .iter()
        .find(|n| n.event == "failure" && n.notifier == 0)
        .unwrap();
    assert_eq!(first.target, format!("POST {}/ok?token=***", hooks.base));
    assert!(
        notes
            .iter()
            .all(|n| !format!("{n:?}").contains("t0ps3cret"))
    );
    // The email, over SMTP.
    let mail = mailbox.messages.lock().unwrap().clone();
    assert_eq!(mail.len(), 1, "{mail:#?}");
    assert!(
        mail[0].contains("RCPT TO:<oncall@example.com>"),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains("Subject: alerts failed"), "{}", mail[0]);
    assert!(mail[0].contains("error: "), "{}", mail[0]);
    // None of it touched the run.
    let run_after = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(
        (run_after.state, run_after.finished_at_ms),
        (run_before.state, run_before.finished_at_ms)
    );

    // Without an SMTP server, an email is recorded as failed with the reason, at once.
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    let notes = deliver_all(&other, &store, run_id).await;
    let email = notes.iter().find(|n| n.kind == "email").unwrap();
    assert_eq!(
        (email.state, email.attempts),
        (NotificationState::Failed, 1)
    );
    assert!(
        email
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("AMDAHL_SMTP_URL"),
        "{email:?}"
    );
}

/// A scheduler that dies between a run's end and its notification, or while sending it: the
/// next one records it (once) and sends it; a server that is down at first gets it once it
/// answers.
pub async fn notifications_survive_a_dead_scheduler_and_a_server_down(db: &TestDb) {
    let store = db.store().await;
    // A port nothing listens on yet.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
dag: later
on_success:
  - webhook: {{ url: "http://{addr}/ok" }}
tasks:
  only:
    shell: "true"
"#
    );
    let dag = load_bytes("later.yaml", dir.path(), yaml.as_bytes()).unwrap();
    let runner = runner(&store, dir.path());
    let run_id = runner.create_run(&dag, &dag.params).await.unwrap();
    let state = runner
        .drive(&dag, run_id, &Quiet, std::future::pending())
        .await
        .unwrap();
    assert_eq!(state, RunState::Success);
    // The run ended and no scheduler has looked: nothing is recorded yet.
    assert!(store.notifications(run_id).await.unwrap().is_empty());

    // A scheduler records it, claims it, and dies before it is sent: the claim hides it for
    // its lease only.
    let first = scheduler(&store, quick(None));
    first.tick().await.unwrap();
    let notes = store.notifications(run_id).await.unwrap();
    assert_eq!(notes.len(), 1);
    let now = SystemClock.now_ms();
    assert!(
        store
            .claim_notification(notes[0].id, 0, now + 300)
            .await
            .unwrap()
    );
    assert_eq!(store.due_notifications(now, 10).await.unwrap().len(), 0);
    drop(first);

    // The next scheduler: the server is still down, so the attempt fails and is retried.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = scheduler(&store, quick(None));
    second.tick().await.unwrap();
    assert_eq!(second.deliver_notifications().await.unwrap(), 1);
    let note = store.notifications(run_id).await.unwrap().remove(0);
    assert_eq!((note.state, note.attempts), (NotificationState::Pending, 2));
    assert!(
        note.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("cannot connect"),
        "{note:?}"
    );
    // The server comes up; the retry reaches it, once.
    let hooks = Hooks::start_on(addr).await;
    let notes = deliver_all(&second, &store, run_id).await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].state, NotificationState::Delivered);
    assert_eq!(notes[0].response_code, Some(200));
    assert_eq!(hooks.requests("/ok").len(), 1);
    // Watching stopped once everything was recorded: a later pass reads nothing of it.
    assert!(store.watched_runs(100).await.unwrap().is_empty());
}

use amdahl_scheduler::Clock;
