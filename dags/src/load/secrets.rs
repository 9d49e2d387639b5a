//! `secrets:`: each named secret and where its value comes from, an environment variable
//! or a file.

use std::collections::BTreeMap;
use std::path::Path;

use super::Cx;
use crate::model::{Secret, SecretSource};
use crate::yaml::Node;

/// Keys allowed under `secrets.<name>`: exactly one of them.
pub const SECRET_KEYS: &[&str] = &["env", "file"];

impl Cx {
    /// `secrets:`: each names where its value comes from, `env: VARIABLE` or `file: PATH`.
    pub(super) fn secrets(&mut self, node: &Node, base_dir: &Path) -> BTreeMap<String, Secret> {
        let mut out = BTreeMap::new();
        for (name, key, value) in self.entries(node, "secrets", None).unwrap_or_default() {
            let mut valid = self.id(key, name, "secret");
            if valid && name.starts_with("amdahl_") {
                self.error(
                    key.span,
                    format!(
                        "secret `{name}`: names starting with `amdahl_` are Amdahl's own \
                         variables; choose another"
                    ),
                );
                valid = false;
            }
            let what = format!("secrets.{name}");
            let Some(fields) = self.entries(value, &what, Some(SECRET_KEYS)) else {
                continue;
            };
            let field = |k: &str| fields.iter().find(|(f, _, _)| *f == k).map(|(_, _, v)| *v);
            let source = match (field("env"), field("file")) {
                (Some(node), None) => {
                    self.string(node, &format!("{what}.env"))
                        .and_then(|variable| {
                            let ok = !variable.is_empty()
                                && !variable.starts_with(|c: char| c.is_ascii_digit())
                                && variable
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
                            if !ok {
                                self.error(
                                    node.span,
                                    format!(
                                        "`{what}.env` must name an environment variable \
                                     (letters, digits and `_`), found `{variable}`"
                                    ),
                                );
                            }
                            ok.then_some(SecretSource::Env(variable))
                        })
                }
                (None, Some(node)) => self
                    .string(node, &format!("{what}.file"))
                    .map(|path| SecretSource::File(base_dir.join(path))),
                (Some(_), Some(node)) => {
                    self.error(
                        node.span,
                        format!("secret `{name}` has both `env` and `file`; give one"),
                    );
                    None
                }
                (None, None) => {
                    self.error(
                        key.span,
                        format!("secret `{name}` needs `env: VARIABLE` or `file: PATH`"),
                    );
                    None
                }
            };
            if let (Some(source), true) = (source, valid) {
                out.insert(
                    name.to_string(),
                    Secret {
                        name: name.to_string(),
                        source,
                        span: key.span,
                    },
                );
            }
        }
        out
    }
}
