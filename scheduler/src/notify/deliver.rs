//! Sending recorded notifications: claim, render, send, record the answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use amdahl_dags::Dag;
use amdahl_dags::notice::{self, NoticeContext, NoticeEvent, Notifier};
use tokio::sync::Mutex;

use super::smtp::{self, SmtpSettings};
use super::{Level, notifiers};
use crate::Clock;
use crate::service::load_pinned;
use crate::store::{Delivery, NotificationRecord, Store, StoreError};

/// How hard delivery tries.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// One request's limit (connecting, sending, the answer).
    pub timeout: Duration,
    /// Attempts before a notification is given up on.
    pub max_attempts: i64,
    /// The wait after the first failed attempt; it doubles each time, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Notifications sent at once.
    pub parallel: usize,
    /// The UI's address, for links in messages (`AMDAHL_UI_URL`).
    pub ui_url: Option<String>,
    /// The SMTP server for `email` notifiers (`AMDAHL_SMTP_URL`).
    pub smtp_url: Option<String>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            parallel: 16,
            ui_url: None,
            smtp_url: None,
        }
    }
}

impl DeliverySettings {
    /// The defaults, with the UI address and SMTP server from `AMDAHL_UI_URL` and
    /// `AMDAHL_SMTP_URL`.
    pub fn from_env() -> DeliverySettings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        DeliverySettings {
            ui_url: var("AMDAHL_UI_URL"),
            smtp_url: var("AMDAHL_SMTP_URL"),
            ..DeliverySettings::default()
        }
    }

    /// The wait after failed attempt number `attempts` (1-based), with up to 20 % jitter
    /// taken from `seed` so that many notifications failing at once do not retry in step.
    pub fn backoff_after(&self, attempts: i64, seed: i64) -> Duration {
        let doublings = attempts.clamp(1, 30) as u32 - 1;
        let base = self
            .backoff
            .saturating_mul(1u32 << doublings.min(20))
            .min(self.max_backoff);
        let jitter = (seed.unsigned_abs().wrapping_mul(2_654_435_761) % 1_000) as u32;
        base + base.mul_f64(f64::from(jitter) / 5_000.0)
    }
}

/// Sends due notifications. One per scheduler process; cheap to share.
pub struct Deliverer {
    settings: DeliverySettings,
    client: reqwest::Client,
    /// Pinned DAG versions already loaded, by version id.
    dags: Mutex<BTreeMap<i64, Arc<Dag>>>,
}

/// What one attempt came to, before it is recorded.
struct Sent {
    code: Option<i64>,
    /// `None`: delivered. `Some((error, retry))`: failed, and whether trying again may help.
    failure: Option<(String, bool)>,
}

impl Deliverer {
    pub fn new(settings: DeliverySettings) -> Result<Deliverer, String> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("amdahl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make the HTTP client for notifications: {e}"))?;
        Ok(Deliverer {
            settings,
            client,
            dags: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    /// Claims and sends every notification due now (up to `limit`), `parallel` at a time.
    /// Returns how many attempts were made.
    pub async fn deliver_due(
        self: &Arc<Self>,
        store: &Store,
        clock: &Arc<dyn Clock>,
        limit: i64,
    ) -> Result<usize, StoreError> {
        let now = clock.now_ms();
        let due = store.due_notifications(now, limit).await?;
        let mut tried = 0;
        let mut running = tokio::task::JoinSet::new();
        for note in due {
            // Hidden from other schedulers while this attempt runs, and retried after that if
            // this one dies sending it.
            let lease = self.settings.timeout.as_millis() as i64 * 3 + 5_000;
            if !store
                .claim_notification(note.id, note.attempts, now + lease)
                .await?
            {
                continue;
            }
            tried += 1;
            while running.len() >= self.settings.parallel.max(1) {
                if let Some(done) = running.join_next().await {
                    done.map_err(|e| StoreError::Corrupt(format!("delivery task: {e}")))??;
                }
            }
            let (me, store, clock) = (self.clone(), store.clone(), clock.clone());
            running.spawn(async move { me.attempt(&store, clock.as_ref(), note).await });
        }
        while let Some(done) = running.join_next().await {
            done.map_err(|e| StoreError::Corrupt(format!("delivery task: {e}")))??;
        }
        Ok(tried)
    }

    /// One claimed attempt: render, send, record.
    async fn attempt(
        &self,
        store: &Store,
        clock: &dyn Clock,
        note: NotificationRecord,
    ) -> Result<(), StoreError> {
        let attempts = note.attempts + 1;
        let (sent, secrets) = match self.prepare(store, &note).await {
            Ok((dag, notifier, ctx)) => {
                let secrets = read_secrets(&dag);
                let sent = match secrets.as_ref() {
                    Ok(values) => self.send(&notifier, &ctx, values).await,
                    Err(e) => Sent {
                        code: None,
                        failure: Some((e.clone(), true)),
                    },
                };
                (sent, secrets.unwrap_or_default())
            }
            Err(e) => (
                Sent {
                    code: None,
                    failure: Some((e, false)),
                },
                BTreeMap::new(),
            ),
        };
        let now = clock.now_ms();
        let delivery = match sent.failure {
            None => Delivery::Delivered {
                response_code: sent.code,
            },
            Some((error, retry)) => {
                let error = amdahl_dags::mask(&error, secrets.values().map(String::as_str));
                if retry && attempts < self.settings.max_attempts {
                    let wait = self.settings.backoff_after(attempts, note.id);
                    Delivery::Retry {
                        response_code: sent.code,
                        error,
                        next_at_ms: now + wait.as_millis() as i64,
                    }
                } else {
                    Delivery::Failed {
                        response_code: sent.code,
                        error,
                    }
                }
            }
        };
        store
            .settle_notification(note.id, attempts, &delivery, now)
            .await
    }

    /// The notifier and context a notification was recorded with.
    async fn prepare(
        &self,
        store: &Store,
        note: &NotificationRecord,
    ) -> Result<(Arc<Dag>, Notifier, NoticeContext), String> {
        let run = store
            .run(note.run_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("run {} is gone", note.run_id))?;
        let dag = {
            let mut dags = self.dags.lock().await;
            match dags.get(&run.dag_version_id) {
                Some(dag) => dag.clone(),
                None => {
                    let dag = Arc::new(load_pinned(store, run.dag_version_id).await?);
                    dags.insert(run.dag_version_id, dag.clone());
                    dag
                }
            }
        };
        let level = if note.level == "dag" {
            Level::Dag
        } else {
            Level::Task
        };
        let event = NoticeEvent::from_code(&note.event)
            .ok_or_else(|| format!("unknown event `{}`", note.event))?;
        let notifier = notifiers(&dag, level, &note.task_id, event)
            .get(note.notifier as usize)
            .cloned()
            .ok_or_else(|| "its DAG version no longer lists this notifier".to_string())?;
        let ctx: NoticeContext = serde_json::from_str(&note.context_json)
            .map_err(|e| format!("stored context does not read: {e}"))?;
        Ok((dag, notifier, ctx))
    }

    async fn send(
        &self,
        notifier: &Notifier,
        ctx: &NoticeContext,
        secrets: &BTreeMap<String, String>,
    ) -> Sent {
        let render = |text: &str| {
            notice::render(text, ctx, secrets).map_err(|e| format!("template: {}", e.message))
        };
        match notifier {
            Notifier::Webhook(hook) => {
                let built = (|| {
                    let url = render(&hook.url.text)?;
                    let url = url.trim();
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(format!("`{url}` is not an http:// or https:// URL"));
                    }
                    let method = reqwest::Method::from_bytes(hook.method.as_bytes())
                        .map_err(|e| e.to_string())?;
                    let mut request = self.client.request(method, url);
                    let mut typed = false;
                    for (name, value) in &hook.headers {
                        typed |= name.eq_ignore_ascii_case("content-type");
                        request = request.header(name.as_str(), render(&value.text)?);
                    }
                    let body = match &hook.body {
                        Some(body) => render(&body.text)?,
                        None => {
                            if !typed {
                                request = request.header("Content-Type", "application/json");
                            }
                            notice::default_body(ctx)
                        }
                    };
                    Ok(if hook.method == "GET" {
                        request
                    } else {
                        request.body(body)
                    })
                })();
                let request = match built {
                    Ok(request) => request,
                    Err(e) => {
                        return Sent {
                            code: None,
                            failure: Some((e, false)),
                        };
                    }
                };
                match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        let code = Some(i64::from(status.as_u16()));
                        if status.is_success() {
                            Sent {
                                code,
                                failure: None,
                            }
                        } else {
                            let text = response.text().await.unwrap_or_default();
                            let text: String = text.chars().take(200).collect();
                            // A server error, a timeout or a rate limit may pass; a request
                            // the server refuses (400, 401, 404, …) will be refused again.
                            let retry = status.is_server_error()
                                || status.as_u16() == 408
                                || status.as_u16() == 429;
                            Sent {
                                code,
                                failure: Some((format!("HTTP {status}: {}", text.trim()), retry)),
                            }
                        }
                    }
                    Err(e) => {
                        let retry = !e.is_redirect() && !e.is_builder();
                        let what = if e.is_timeout() {
                            format!("no answer within {:?}", self.settings.timeout)
                        } else if e.is_redirect() {
                            "too many redirects (more than 5)".to_string()
                        } else if e.is_connect() {
                            format!("cannot connect: {}", error_chain(&e))
                        } else {
                            error_chain(&e)
                        };
                        Sent {
                            code: None,
                            failure: Some((what, retry)),
                        }
                    }
                }
            }
            Notifier::Email(email) => {
                let Some(url) = &self.settings.smtp_url else {
                    return Sent {
                        code: None,
                        failure: Some((
                            "no SMTP server: set AMDAHL_SMTP_URL (smtp://host:port) on the scheduler"
                                .into(),
                            false,
                        )),
                    };
                };
                let built = (|| {
                    let subject = match &email.subject {
                        Some(s) => render(&s.text)?,
                        None => notice::default_subject(ctx),
                    };
                    let body = match &email.body {
                        Some(b) => render(&b.text)?,
                        None => notice::default_text(ctx),
                    };
                    let settings = SmtpSettings::parse(url)?;
                    Ok((subject, body, settings))
                })();
                let (subject, body, settings) = match built {
                    Ok(parts) => parts,
                    Err(e) => {
                        return Sent {
                            code: None,
                            failure: Some((e, false)),
                        };
                    }
                };
                match tokio::time::timeout(
                    self.settings.timeout,
                    smtp::send(&settings, &email.to, &subject, &body),
                )
                .await
                {
                    Ok(Ok(code)) => Sent {
                        code: Some(code),
                        failure: None,
                    },
                    Ok(Err(e)) => Sent {
                        code: e.code,
                        failure: Some((e.message, e.retry)),
                    },
                    Err(_) => Sent {
                        code: None,
                        failure: Some((
                            format!(
                                "the SMTP server did not finish within {:?}",
                                self.settings.timeout
                            ),
                            true,
                        )),
                    },
                }
            }
        }
    }
}

/// The DAG's secrets, read on the scheduler now.
fn read_secrets(dag: &Dag) -> Result<BTreeMap<String, String>, String> {
    dag.secrets
        .values()
        .map(|secret| Ok((secret.name.clone(), secret.resolve()?)))
        .collect()
}

/// An error with its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
