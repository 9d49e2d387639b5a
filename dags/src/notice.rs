//! Notifications: who is told when a run or a task ends (`on_failure`, `on_retry`,
//! `on_success`), and the Jinja their messages are rendered from.
//!
//! A DAG declares notifiers at its top (about the run: the run failed, succeeded, a task of it
//! is retrying) and on tasks (about that task). What a message may say is a [`NoticeContext`]:
//! the event, the run, the DAG, the task, the run's params and the DAG's secrets. The context
//! is stored with each notification (never the secrets, which are read when it is sent), so a
//! scheduler that restarts renders the same message.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::template::{TemplateError, environment, from_minijinja, locate};
use crate::yaml::Located;

/// When a notifier is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoticeEvent {
    /// The run failed (DAG level) or the task failed for good (task level).
    Failure,
    /// An attempt failed and the task will be tried again.
    Retry,
    /// The run succeeded (DAG level) or the task succeeded (task level).
    Success,
    /// The run missed its `deadline:` (DAG level only).
    Deadline,
}

impl NoticeEvent {
    pub const ALL: [NoticeEvent; 4] = [
        NoticeEvent::Failure,
        NoticeEvent::Retry,
        NoticeEvent::Success,
        NoticeEvent::Deadline,
    ];

    /// The stored name: `failure`, `retry`, `success`.
    pub fn code(self) -> &'static str {
        match self {
            NoticeEvent::Failure => "failure",
            NoticeEvent::Retry => "retry",
            NoticeEvent::Success => "success",
            NoticeEvent::Deadline => "deadline",
        }
    }

    pub fn from_code(code: &str) -> Option<NoticeEvent> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The DAG file key that lists its notifiers: `on_failure`, …
    pub fn key(self) -> &'static str {
        match self {
            NoticeEvent::Failure => "on_failure",
            NoticeEvent::Retry => "on_retry",
            NoticeEvent::Success => "on_success",
            NoticeEvent::Deadline => "on_deadline",
        }
    }
}

/// The notifiers of a DAG (about its runs) or of a task (about it), by event.
#[derive(Clone, Debug, Default)]
pub struct Notify {
    pub on_failure: Vec<Notifier>,
    pub on_retry: Vec<Notifier>,
    pub on_success: Vec<Notifier>,
    /// DAG level only.
    pub on_deadline: Vec<Notifier>,
}

impl Notify {
    pub fn of(&self, event: NoticeEvent) -> &[Notifier] {
        match event {
            NoticeEvent::Failure => &self.on_failure,
            NoticeEvent::Retry => &self.on_retry,
            NoticeEvent::Success => &self.on_success,
            NoticeEvent::Deadline => &self.on_deadline,
        }
    }

    pub fn is_empty(&self) -> bool {
        NoticeEvent::ALL.iter().all(|e| self.of(*e).is_empty())
    }
}

/// One way of telling someone.
#[derive(Clone, Debug)]
pub enum Notifier {
    Webhook(Webhook),
    Email(Email),
}

impl Notifier {
    /// `webhook` or `email`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Notifier::Webhook(_) => "webhook",
            Notifier::Email(_) => "email",
        }
    }
}

/// An HTTP request: a Slack or Teams incoming webhook is one with a `body`.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// A template; its text must start `http://` or `https://` (or with a template, checked
    /// when sent).
    pub url: Located,
    /// `POST` unless given.
    pub method: String,
    /// Header names and value templates.
    pub headers: Vec<(String, Located)>,
    /// A template; without one the body is a JSON document describing the event.
    pub body: Option<Located>,
}

/// An email sent through the SMTP server named by `AMDAHL_SMTP_URL` on the scheduler.
#[derive(Clone, Debug)]
pub struct Email {
    pub to: Vec<String>,
    pub subject: Option<Located>,
    pub body: Option<Located>,
}

/// Methods a webhook may use.
pub const WEBHOOK_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "GET"];

/// What a notification's templates see, besides the DAG's secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeContext {
    /// `failure`, `retry`, `success` or `deadline`.
    pub event: String,
    pub dag: NoticeDag,
    pub run: NoticeRun,
    /// The task the event is about; for a run's event, its first failed task if any (else
    /// every field is empty).
    pub task: NoticeTask,
    pub params: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeDag {
    pub id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRun {
    pub id: i64,
    pub logical_date: String,
    pub state: String,
    /// The run's page in the UI (from `AMDAHL_UI_URL` on the scheduler; empty without it).
    pub url: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeTask {
    pub id: String,
    pub state: String,
    pub attempt: i64,
    pub error: String,
    /// The last lines the attempt logged (secrets masked, as stored).
    pub log_tail: String,
}

/// Names a notification template may use at the top level.
pub const NOTICE_NAMES: [&str; 6] = ["event", "dag", "run", "task", "params", "secrets"];
const NOTICE_RUN_NAMES: [&str; 4] = ["id", "logical_date", "state", "url"];
const NOTICE_TASK_NAMES: [&str; 5] = ["id", "state", "attempt", "error", "log_tail"];

/// Renders a notification template. Every name is checked first (an unknown param or secret
/// is named, with a suggestion), so a typo fails validation rather than sending a message
/// with a hole in it.
pub fn render(
    text: &str,
    ctx: &NoticeContext,
    secrets: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
        return Ok(text.to_string());
    }
    let env = environment();
    let compiled = env
        .template_from_str(text)
        .map_err(|e| from_minijinja(text, &e))?;
    check_names(text, &compiled.undeclared_variables(true), ctx, secrets)?;
    let value = minijinja::context! {
        event => ctx.event.clone(),
        dag => minijinja::Value::from(minijinja::value::Serde(&ctx.dag)),
        run => minijinja::Value::from(minijinja::value::Serde(&ctx.run)),
        task => minijinja::Value::from(minijinja::value::Serde(&ctx.task)),
        params => minijinja::Value::from(minijinja::value::Serde(&ctx.params)),
        secrets => minijinja::Value::from(minijinja::value::Serde(secrets)),
    };
    compiled.render(value).map_err(|e| from_minijinja(text, &e))
}

/// Renders a template for validation: the DAG's params and a stand-in for each declared
/// secret.
pub fn check(
    template: &Located,
    dag_id: &str,
    params: &BTreeMap<String, serde_json::Value>,
    secrets: &[&str],
) -> Result<String, TemplateError> {
    let ctx = NoticeContext {
        event: "failure".into(),
        dag: NoticeDag { id: dag_id.into() },
        run: NoticeRun {
            id: 1,
            logical_date: "2026-01-01T00:00:00Z".into(),
            state: "failed".into(),
            url: String::new(),
        },
        task: NoticeTask::default(),
        params: params.clone(),
    };
    let secrets = secrets
        .iter()
        .map(|s| (s.to_string(), "secret".to_string()))
        .collect();
    render(&template.text, &ctx, &secrets)
}

fn check_names(
    text: &str,
    names: &HashSet<String>,
    ctx: &NoticeContext,
    secrets: &BTreeMap<String, String>,
) -> Result<(), TemplateError> {
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    for name in names {
        let mut parts = name.splitn(2, '.');
        let head = parts.next().unwrap_or_default();
        let tail = parts.next();
        let (bad, candidates): (Option<&str>, Vec<&str>) = match (head, tail) {
            ("params", Some(p)) if !ctx.params.contains_key(p) => {
                (Some(p), ctx.params.keys().map(String::as_str).collect())
            }
            ("secrets", Some(s)) if !secrets.contains_key(s) => {
                (Some(s), secrets.keys().map(String::as_str).collect())
            }
            ("run", Some(r)) if !NOTICE_RUN_NAMES.contains(&r) => {
                (Some(r), NOTICE_RUN_NAMES.to_vec())
            }
            ("task", Some(t)) if !NOTICE_TASK_NAMES.contains(&t) => {
                (Some(t), NOTICE_TASK_NAMES.to_vec())
            }
            ("dag", Some(d)) if d != "id" => (Some(d), vec!["id"]),
            (h, _) if !NOTICE_NAMES.contains(&h) => (Some(h), NOTICE_NAMES.to_vec()),
            _ => (None, Vec::new()),
        };
        if let Some(bad) = bad {
            let (line, column) = locate(text, name).unwrap_or((1, 1));
            let message = match head {
                "params" => format!("template names undefined param `{bad}`"),
                "secrets" => format!("template names undeclared secret `{bad}`"),
                _ if bad == head => format!("template names undefined variable `{bad}`"),
                _ => format!("template names undefined field `{head}.{bad}`"),
            };
            let help = crate::diagnostic::did_you_mean(bad, candidates.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| match head {
                    "secrets" => Some("declare it under `secrets:`".to_string()),
                    "params" => Some("declare it under `params:`".to_string()),
                    _ => None,
                });
            return Err(TemplateError {
                message,
                line,
                column,
                len: name.len(),
                help,
            });
        }
    }
    Ok(())
}

/// The body a webhook without `body:` sends: the event as one JSON object.
pub fn default_body(ctx: &NoticeContext) -> String {
    serde_json::json!({
        "event": ctx.event,
        "dag_id": ctx.dag.id,
        "run_id": ctx.run.id,
        "logical_date": ctx.run.logical_date,
        "run_state": ctx.run.state,
        "run_url": ctx.run.url,
        "task_id": ctx.task.id,
        "task_state": ctx.task.state,
        "attempt": ctx.task.attempt,
        "error": ctx.task.error,
    })
    .to_string()
}

/// The subject an email without `subject:` has.
pub fn default_subject(ctx: &NoticeContext) -> String {
    if ctx.event == NoticeEvent::Deadline.code() {
        format!(
            "[amdahl] {} run {}: missed its deadline ({})",
            ctx.dag.id, ctx.run.id, ctx.run.state
        )
    } else if ctx.task.id.is_empty() {
        format!(
            "[amdahl] {} run {}: {}",
            ctx.dag.id, ctx.run.id, ctx.run.state
        )
    } else {
        format!(
            "[amdahl] {} run {}: task {} {}",
            ctx.dag.id, ctx.run.id, ctx.task.id, ctx.event
        )
    }
}

/// The text an email without `body:` has.
pub fn default_text(ctx: &NoticeContext) -> String {
    let mut text = format!(
        "DAG {}, run {} ({}): {}\n",
        ctx.dag.id, ctx.run.id, ctx.run.logical_date, ctx.run.state
    );
    if ctx.event == NoticeEvent::Deadline.code() {
        text.push_str("the run missed its deadline\n");
    }
    if !ctx.task.id.is_empty() {
        text.push_str(&format!(
            "task {} attempt {}: {}\n",
            ctx.task.id, ctx.task.attempt, ctx.task.state
        ));
    }
    if !ctx.task.error.is_empty() {
        text.push_str(&format!("error: {}\n", ctx.task.error));
    }
    if !ctx.task.log_tail.is_empty() {
        text.push_str(&format!("\nlast log lines:\n{}\n", ctx.task.log_tail));
    }
    if !ctx.run.url.is_empty() {
        text.push_str(&format!("\n{}\n", ctx.run.url));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> NoticeContext {
        NoticeContext {
            event: "failure".into(),
            dag: NoticeDag { id: "d".into() },
            run: NoticeRun {
                id: 7,
                logical_date: "2026-01-01T00:00:00Z".into(),
                state: "failed".into(),
                url: "http://ui/runs/7".into(),
            },
            task: NoticeTask {
                id: "load".into(),
                state: "failed".into(),
                attempt: 2,
                error: "exit 1".into(),
                log_tail: "boom".into(),
            },
            params: BTreeMap::from([("env".to_string(), serde_json::json!("prod"))]),
        }
    }

    #[test]
    fn renders_every_name() {
        let secrets = BTreeMap::from([("hook".to_string(), "s3cr3t".to_string())]);
        let text = "{{ event }} {{ dag.id }}#{{ run.id }} {{ run.state }} {{ task.id }}/{{ task.attempt }} \
                    {{ task.error }} {{ params.env }} {{ secrets.hook }} {{ run.url }}";
        assert_eq!(
            render(text, &ctx(), &secrets).unwrap(),
            "failure d#7 failed load/2 exit 1 prod s3cr3t http://ui/runs/7"
        );
    }

    #[test]
    fn unknown_names_are_named_with_a_suggestion() {
        let secrets = BTreeMap::from([("hook".to_string(), "x".to_string())]);
        let err = render("{{ secrets.hok }}", &ctx(), &secrets).unwrap_err();
        assert_eq!(err.message, "template names undeclared secret `hok`");
        assert_eq!(err.help.as_deref(), Some("did you mean `hook`?"));
        let err = render("a\n{{ task.eror }}", &ctx(), &secrets).unwrap_err();
        assert_eq!(err.message, "template names undefined field `task.eror`");
        assert_eq!((err.line, err.column), (2, 4));
        let err = render("{{ runs.id }}", &ctx(), &secrets).unwrap_err();
        assert_eq!(err.help.as_deref(), Some("did you mean `run`?"));
    }

    #[test]
    fn the_context_survives_storage() {
        let text = serde_json::to_string(&ctx()).unwrap();
        let back: NoticeContext = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ctx());
        let body: serde_json::Value = serde_json::from_str(&default_body(&ctx())).unwrap();
        assert_eq!(body["task_id"], "load");
        assert_eq!(body["attempt"], 2);
    }
}
