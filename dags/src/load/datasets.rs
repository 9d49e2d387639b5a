//! `datasets:`: each named input file or object, its location, format and object-storage
//! options.

use std::collections::BTreeMap;
use std::path::Path;

use super::Cx;
use crate::model::{Dataset, DatasetFormat, Location, OBJECT_OPTIONS};
use crate::yaml::{Node, Span, Value};

pub const DATASET_KEYS: &[&str] = &["uri", "format", "options"];

impl Cx {
    pub(super) fn datasets(&mut self, node: &Node, base_dir: &Path) -> BTreeMap<String, Dataset> {
        let mut out = BTreeMap::new();
        for (name, key, value) in self.entries(node, "datasets", None).unwrap_or_default() {
            let valid = self.id(key, name, "dataset");
            let what = format!("datasets.{name}");
            let Some(fields) = self.entries(value, &what, Some(DATASET_KEYS)) else {
                continue;
            };
            let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
            let uri = match field("uri") {
                Some(n) => self.string(n, &format!("{what}.uri")).map(|u| (u, n.span)),
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
                    uri,
                    location,
                    format,
                    span: key.span,
                },
            );
        }
        out
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
