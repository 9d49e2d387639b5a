//! `on_failure:`, `on_retry:`, `on_success:` on a DAG or a task: lists of notifiers, each a
//! `webhook:` or an `email:`, whose templates are checked against the DAG's params and
//! secrets.

use std::collections::BTreeMap;

use super::{Cx, Entries};
use crate::model::Located;
use crate::notice::{self, Email, NoticeEvent, Notifier, Notify, WEBHOOK_METHODS, Webhook};
use crate::yaml::{Node, Value};

/// Keys allowed on one notifier: exactly one of them.
pub const NOTIFIER_KEYS: &[&str] = &["webhook", "email"];
/// Keys allowed under `webhook:`.
pub const WEBHOOK_KEYS: &[&str] = &["url", "method", "headers", "body"];
/// Keys allowed under `email:`.
pub const EMAIL_KEYS: &[&str] = &["to", "subject", "body"];
/// Most notifiers one event may list.
pub const MAX_NOTIFIERS: usize = 16;

/// What notification templates are checked against.
pub(super) struct NoticeScope<'a> {
    pub dag_id: &'a str,
    pub params: &'a BTreeMap<String, serde_json::Value>,
    pub secrets: Vec<&'a str>,
}

impl Cx {
    /// The `on_*` keys among `fields` (a DAG's or a task's entries), under `prefix` for
    /// messages (`` or `tasks.load.`).
    pub(super) fn notify(
        &mut self,
        fields: &Entries<'_>,
        prefix: &str,
        scope: &NoticeScope<'_>,
    ) -> Option<Notify> {
        let mut notify = Notify::default();
        let mut ok = true;
        for event in NoticeEvent::ALL {
            let Some((_, _, node)) = fields.iter().find(|(k, _, _)| *k == event.key()) else {
                continue;
            };
            let what = format!("{prefix}{}", event.key());
            match self.notifiers(node, &what, scope) {
                Some(list) => match event {
                    NoticeEvent::Failure => notify.on_failure = list,
                    NoticeEvent::Retry => notify.on_retry = list,
                    NoticeEvent::Success => notify.on_success = list,
                    NoticeEvent::Deadline => notify.on_deadline = list,
                },
                None => ok = false,
            }
        }
        ok.then_some(notify)
    }

    fn notifiers(
        &mut self,
        node: &Node,
        what: &str,
        scope: &NoticeScope<'_>,
    ) -> Option<Vec<Notifier>> {
        let Value::Seq(items) = &node.value else {
            self.error_help(
                node.span,
                format!(
                    "`{what}` must be a list of notifiers, found {}",
                    node.type_name()
                ),
                "write e.g. `- webhook: { url: https://… }`",
            );
            return None;
        };
        if items.len() > MAX_NOTIFIERS {
            self.error(
                node.span,
                format!(
                    "`{what}` lists {} notifiers; at most {MAX_NOTIFIERS}",
                    items.len()
                ),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let here = format!("{what}[{i}]");
            match self.notifier(item, &here, scope) {
                Some(n) => out.push(n),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn notifier(&mut self, node: &Node, what: &str, scope: &NoticeScope<'_>) -> Option<Notifier> {
        let fields = self.entries(node, what, Some(NOTIFIER_KEYS))?;
        match fields.as_slice() {
            [("webhook", _, value)] => self
                .webhook(value, &format!("{what}.webhook"), scope)
                .map(Notifier::Webhook),
            [(_, _, value)] => self
                .email(value, &format!("{what}.email"), scope)
                .map(Notifier::Email),
            [] => {
                self.error_help(
                    node.span,
                    format!("`{what}` names no notifier"),
                    format!("write exactly one of: {}", NOTIFIER_KEYS.join(", ")),
                );
                None
            }
            [_, (_, second, _), ..] => {
                self.error_help(
                    second.span,
                    format!("`{what}` names two notifiers; each list item is one"),
                    "make it a second list item",
                );
                None
            }
        }
    }

    fn webhook(&mut self, node: &Node, what: &str, scope: &NoticeScope<'_>) -> Option<Webhook> {
        let fields = self.entries(node, what, Some(WEBHOOK_KEYS))?;
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let mut ok = true;
        let url = match field("url") {
            Some(n) => self.notice_template(n, &format!("{what}.url"), scope),
            None => {
                self.error(node.span, format!("`{what}` needs a `url`"));
                None
            }
        };
        if let Some(url) = &url
            && !url.text.trim_start().starts_with("{{")
        {
            let lower = url.text.trim().to_ascii_lowercase();
            let scheme_ok = ["http://", "https://"]
                .iter()
                .any(|s| lower.starts_with(s) && lower.len() > s.len());
            if !scheme_ok {
                self.error_help(
                    url.span,
                    format!("`{what}.url` must be an http:// or https:// URL, found `{}`", url.text),
                    "a Slack or Teams incoming webhook is an https:// URL; keep its token in a secret",
                );
                ok = false;
            }
        }
        let method = match field("method") {
            Some(n) => self.string(n, &format!("{what}.method")).and_then(|m| {
                let upper = m.to_ascii_uppercase();
                if WEBHOOK_METHODS.contains(&upper.as_str()) {
                    Some(upper)
                } else {
                    self.one_of(n.span, &format!("{what}.method"), &m, &WEBHOOK_METHODS);
                    None
                }
            }),
            None => Some("POST".to_string()),
        };
        let mut headers = Vec::new();
        if let Some(n) = field("headers") {
            for (name, key, value) in self
                .entries(n, &format!("{what}.headers"), None)
                .unwrap_or_default()
            {
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                if !valid {
                    self.error(
                        key.span,
                        format!("`{what}.headers`: `{name}` is not an HTTP header name"),
                    );
                    ok = false;
                    continue;
                }
                match self.notice_template(value, &format!("{what}.headers.{name}"), scope) {
                    Some(v) => headers.push((name.to_string(), v)),
                    None => ok = false,
                }
            }
        }
        let body = match field("body") {
            Some(n) => self
                .notice_template(n, &format!("{what}.body"), scope)
                .map(Some),
            None => Some(None),
        };
        let hook = Webhook {
            url: url?,
            method: method?,
            headers,
            body: body?,
        };
        ok.then_some(hook)
    }

    fn email(&mut self, node: &Node, what: &str, scope: &NoticeScope<'_>) -> Option<Email> {
        let fields = self.entries(node, what, Some(EMAIL_KEYS))?;
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let mut ok = true;
        let mut to = Vec::new();
        match field("to") {
            Some(n) => {
                let items: Vec<&Node> = match &n.value {
                    Value::Seq(items) => items.iter().collect(),
                    Value::Str(..) => vec![n],
                    _ => {
                        self.wrong_type(
                            n,
                            "an address or a list of addresses",
                            &format!("{what}.to"),
                        );
                        ok = false;
                        Vec::new()
                    }
                };
                for item in items {
                    let Some(address) = self.string(item, &format!("{what}.to")) else {
                        ok = false;
                        continue;
                    };
                    if !is_address(&address) {
                        self.error(
                            item.span,
                            format!("`{what}.to`: `{address}` is not an email address"),
                        );
                        ok = false;
                    } else {
                        to.push(address);
                    }
                }
                if to.is_empty() && ok {
                    self.error(n.span, format!("`{what}.to` lists no address"));
                    ok = false;
                }
            }
            None => {
                self.error(node.span, format!("`{what}` needs `to`"));
                ok = false;
            }
        }
        let subject = match field("subject") {
            Some(n) => self
                .notice_template(n, &format!("{what}.subject"), scope)
                .map(Some),
            None => Some(None),
        };
        let body = match field("body") {
            Some(n) => self
                .notice_template(n, &format!("{what}.body"), scope)
                .map(Some),
            None => Some(None),
        };
        let email = Email {
            to,
            subject: subject?,
            body: body?,
        };
        ok.then_some(email)
    }

    /// A notification template, rendered once with stand-ins to find unknown names and syntax
    /// errors.
    fn notice_template(
        &mut self,
        node: &Node,
        what: &str,
        scope: &NoticeScope<'_>,
    ) -> Option<Located> {
        let located = self.located(node, what)?;
        match notice::check(&located, scope.dag_id, scope.params, &scope.secrets) {
            Ok(_) => Some(located),
            Err(e) => self.template_error(&located, e),
        }
    }
}

/// A plain `local@domain` address (no display name, no spaces, no line breaks).
fn is_address(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && !"<>,;\"".contains(c))
}
