//! Located problems in a DAG file and how they are printed.
//!
//! Every check in the project that can blame a place in a DAG file produces a [`Diagnostic`]:
//! the YAML loader, the model validation here, and the SQL planning in `executors`. Rendering
//! follows rustc's layout (`--> file:line:column`, the source line, a caret underline) so the
//! output is familiar and editors can jump to it.

use std::fmt::{self, Write as _};

use crate::yaml::Span;

/// One problem found in a DAG file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line and column of the offending text, and how many characters to underline.
    pub line: usize,
    pub column: usize,
    pub len: usize,
    pub message: String,
    /// A hint printed under the caret, such as "did you mean `needs`?".
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: span.start.line.max(1),
            column: span.start.column.max(1),
            len: span.len.max(1),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line:column: message`, one line, for logs and compact output.
    pub fn short(&self) -> String {
        format!(
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }

    /// The full report with the source line and a caret underline.
    pub fn render(&self, source: &str) -> String {
        self.render_as("error", source)
    }

    /// [`Diagnostic::render`] under another level, e.g. `warning`.
    pub fn render_as(&self, level: &str, source: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{level}: {}", self.message);
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        let _ = writeln!(out, "{pad}--> {}:{}:{}", self.file, self.line, self.column);
        if let Some(text) = source.lines().nth(self.line - 1) {
            let text = text.trim_end_matches('\r');
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{} | {}", self.line, text);
            let width = text.chars().count();
            let start = (self.column - 1).min(width);
            let len = self.len.min(width.saturating_sub(start)).max(1);
            let _ = write!(out, "{pad} | {}{}", " ".repeat(start), "^".repeat(len));
            if let Some(help) = &self.help {
                let _ = write!(out, " {help}");
            }
            out.push('\n');
        } else if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

/// Every problem found in one file, in source order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn sort(&mut self) {
        self.items
            .sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
        self.items.dedup();
    }

    /// All reports, each with its snippet, followed by a count.
    pub fn render(&self, source: &str) -> String {
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&d.render(source));
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Edit distance for "did you mean" hints.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j + 1] + 1).min(cur[j] + 1).min(prev[j] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate the word most likely meant, if any: the closest within one edit, else one
/// the word (of three characters or more) begins up to an underscore (`max` for `max_map`),
/// else the closest within a small edit distance.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let length = word.chars().count();
    let limit = (length / 3).max(1) + 1;
    let mut closest: Option<(usize, &'a str)> = None;
    let mut begun: Option<&'a str> = None;
    for candidate in candidates {
        let distance = levenshtein(word, candidate);
        if distance <= limit && closest.is_none_or(|best| (distance, candidate) < best) {
            closest = Some((distance, candidate));
        }
        if length >= 3
            && candidate
                .strip_prefix(word)
                .is_some_and(|rest| rest.starts_with('_'))
            && begun.is_none_or(|best| (candidate.len(), candidate) < (best.len(), best))
        {
            begun = Some(candidate);
        }
    }
    match (closest, begun) {
        (Some((1, near)), _) | (Some((_, near)), None) => Some(near),
        (_, Some(begun)) => Some(begun),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_caret_under_the_span() {
        let d = Diagnostic::new("d.yaml", Span::at(2, 3, 4), "unknown key `neds`")
            .with_help("did you mean `needs`?");
        let text = d.render("tasks:\n  neds: [a]\n");
        assert_eq!(
            text,
            "error: unknown key `neds`\n --> d.yaml:2:3\n  |\n2 |   neds: [a]\n  |   ^^^^ did you mean `needs`?\n"
        );
    }

    #[test]
    fn suggestions_pick_the_nearest_key() {
        assert_eq!(
            did_you_mean("neds", ["needs", "retries", "sql"]),
            Some("needs")
        );
        assert_eq!(
            did_you_mean("retires", ["retries", "retry_delay"]),
            Some("retries")
        );
        assert_eq!(did_you_mean("zzzzzz", ["needs", "sql"]), None);
        assert_eq!(
            did_you_mean("max", ["over", "as", "max_map"]),
            Some("max_map")
        );
        assert_eq!(did_you_mean("sq", ["sql", "sql_file"]), Some("sql"));
        assert_eq!(did_you_mean("ma", ["over", "max_map"]), None);
    }
}
