//! `datasets:`: each named input file or object, its location, format and object-storage
//! options.

use std::collections::BTreeMap;
use std::path::Path;

use super::Cx;
use crate::model::{Dataset, DatasetFormat, Location, OBJECT_OPTIONS, Output, OutputMode};
use crate::template::RunContext;
use crate::yaml::{Node, Span, Value};

pub const DATASET_KEYS: &[&str] = &["uri", "format", "options"];
/// Keys of a task's `output:`.
pub const OUTPUT_KEYS: &[&str] = &["uri", "mode", "format", "options"];

impl Cx {
    pub(super) fn datasets(
        &mut self,
        node: &Node,
        base_dir: &Path,
        ctx: &RunContext,
    ) -> BTreeMap<String, Dataset> {
        let mut out = BTreeMap::new();
        for (name, key, value) in self.entries(node, "datasets", None).unwrap_or_default() {
            let valid = self.id(key, name, "dataset");
            let what = format!("datasets.{name}");
            let Some(fields) = self.entries(value, &what, Some(DATASET_KEYS)) else {
                continue;
            };
            let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
            // A templated `uri` (`s3://lake/raw/dt={{ ds }}/`) names each run's own data:
            // checked here for a sample run, rendered for each run when its tasks start.
            let mut templated = false;
            let uri = match field("uri") {
                Some(n) => self.string(n, &format!("{what}.uri")).and_then(|u| {
                    if !(u.contains("{{") || u.contains("{%")) {
                        return Some((u, n.span));
                    }
                    templated = true;
                    let located = self.located(n, &format!("{what}.uri"))?;
                    let sample = self.template(&located, ctx)?;
                    Some((sample, n.span))
                }),
                None => {
                    self.error(key.span, format!("dataset `{name}` needs a `uri`"));
                    None
                }
            };
            let format = match field("format") {
                Some(n) => self.string(n, &format!("{what}.format")).and_then(|f| {
                    let parsed = DatasetFormat::parse(&f);
                    if parsed.is_none() {
                        self.one_of(n.span, &format!("{what}.format"), &f, &DatasetFormat::NAMES);
                    }
                    parsed
                }),
                None => {
                    self.error(
                        key.span,
                        format!("dataset `{name}` needs a `format` (csv or parquet)"),
                    );
                    None
                }
            };
            let options = field("options").map(|n| (self.object_options(n, &what), n.span));
            let Some((uri, uri_span)) = uri else {
                continue;
            };
            let Some(location) = self.resolve_uri(&uri, uri_span, base_dir) else {
                continue;
            };
            let location = match (location, options) {
                (Location::Object(mut object), Some((options, _))) => {
                    object.options = options;
                    Location::Object(object)
                }
                (Location::Local(_), Some((_, span))) => {
                    self.error(
                        span,
                        format!(
                            "`{what}.options` are settings for object storage; `{uri}` is a local path"
                        ),
                    );
                    continue;
                }
                (location, None) => location,
            };
            if let Location::Local(path) = &location
                && !templated
                && !path.exists()
            {
                let shown = if Path::new(uri.split_once("://").map_or(uri.as_str(), |(_, p)| p))
                    .is_absolute()
                {
                    path.display().to_string()
                } else {
                    format!(
                        "{} (relative to the DAG file's folder)",
                        path.strip_prefix(base_dir).unwrap_or(path).display()
                    )
                };
                self.error(uri_span, format!("dataset file not found: {shown}"));
                continue;
            }
            let (Some(format), true) = (format, valid) else {
                continue;
            };
            out.insert(
                name.to_string(),
                Dataset {
                    name: name.to_string(),
                    uri: match field("uri").and_then(|n| n.scalar_text()) {
                        Some(written) if templated => written,
                        _ => uri,
                    },
                    templated,
                    location,
                    format,
                    span: key.span,
                },
            );
        }
        out
    }

    /// A task's `output: { uri, mode, format, options }`.
    pub(super) fn output(
        &mut self,
        node: &Node,
        what: &str,
        ctx: &RunContext,
        base_dir: &Path,
    ) -> Option<Output> {
        let what = format!("{what}.output");
        let fields = self.entries(node, &what, Some(OUTPUT_KEYS))?;
        let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
        let Some(uri_node) = field("uri") else {
            self.error_help(
                node.span,
                format!("`{what}` needs a `uri`"),
                "write e.g. `output: { uri: \"s3://lake/revenue/dt={{ ds }}/\" }`",
            );
            return None;
        };
        let mode = match field("mode") {
            Some(n) => {
                let text = self.string(n, &format!("{what}.mode"))?;
                let parsed = OutputMode::parse(&text);
                if parsed.is_none() {
                    self.one_of(n.span, &format!("{what}.mode"), &text, &OutputMode::NAMES);
                }
                parsed?
            }
            None => OutputMode::default(),
        };
        let format = match field("format") {
            Some(n) => {
                let text = self.string(n, &format!("{what}.format"))?;
                let parsed = DatasetFormat::parse(&text);
                if parsed.is_none() {
                    self.one_of(
                        n.span,
                        &format!("{what}.format"),
                        &text,
                        &DatasetFormat::NAMES,
                    );
                }
                parsed?
            }
            None => DatasetFormat::Parquet,
        };
        let (written, templated, location) =
            self.uri_location(uri_node, field("options"), &what, ctx, base_dir)?;
        Some(Output {
            uri: written,
            templated,
            location,
            mode,
            format,
            span: node.span,
        })
    }

    /// A `uri` (a template when it has `{{`/`{%`, checked by rendering it for a sample run)
    /// with its object-storage `options`: as written, whether templated, and where the
    /// sample run's points (for `output:` and `wait:`).
    pub(super) fn uri_location(
        &mut self,
        uri_node: &Node,
        options: Option<&Node>,
        what: &str,
        ctx: &RunContext,
        base_dir: &Path,
    ) -> Option<(String, bool, Location)> {
        let written = self.string(uri_node, &format!("{what}.uri"))?;
        let templated = written.contains("{{") || written.contains("{%");
        let sample = if templated {
            let located = self.located(uri_node, &format!("{what}.uri"))?;
            self.template(&located, ctx)?
        } else {
            written.clone()
        };
        let location = self.resolve_uri(&sample, uri_node.span, base_dir)?;
        let location = match (location, options) {
            (Location::Object(mut object), Some(n)) => {
                object.options = self.object_options(n, what);
                Location::Object(object)
            }
            (Location::Local(_), Some(n)) => {
                self.error(
                    n.span,
                    format!(
                        "`{what}.options` are settings for object storage; `{written}` is a local path"
                    ),
                );
                return None;
            }
            (location, None) => location,
        };
        Some((written, templated, location))
    }

    /// A dataset's `options:` for object storage: known settings only, never credentials.
    fn object_options(&mut self, node: &Node, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let what = format!("{what}.options");
        for (key, key_node, value) in self.entries(node, &what, None).unwrap_or_default() {
            if !OBJECT_OPTIONS.contains(&key) {
                let secret = ["key", "secret", "token", "password", "sas", "credential"]
                    .iter()
                    .any(|s| key.to_ascii_lowercase().contains(s));
                if secret {
                    self.error(
                        key_node.span,
                        format!(
                            "`{what}.{key}`: credentials do not belong in a DAG file; give them to \
                             the workers in their environment (AWS_ACCESS_KEY_ID, \
                             AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY, …)"
                        ),
                    );
                } else {
                    self.one_of(key_node.span, &what, key, &OBJECT_OPTIONS);
                }
                continue;
            }
            let text = match &value.value {
                Value::Str(s, _) => Some(s.clone()),
                Value::Bool(b) => Some(b.to_string()),
                _ => {
                    self.wrong_type(value, "a string or true/false", &format!("{what}.{key}"));
                    None
                }
            };
            if let Some(text) = text {
                out.insert(key.to_string(), text);
            }
        }
        out
    }

    fn resolve_uri(&mut self, uri: &str, span: Span, base_dir: &Path) -> Option<Location> {
        Location::parse(uri, base_dir)
            .map_err(|e| {
                let e = if e == "empty path" {
                    "empty dataset path".to_string()
                } else {
                    e
                };
                self.error(span, e)
            })
            .ok()
    }
}
