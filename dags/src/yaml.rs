//! A YAML document as a tree of located nodes.
//!
//! The DAG loader needs every value's position (to point errors at `file:line:column`) and
//! must survive hostile files, so it does not deserialize YAML straight into types. This module
//! turns `saphyr-parser` events into a [`Node`] tree under hard budgets: nesting depth, total
//! node count (aliases count every node they copy, so an alias bomb hits the budget long before
//! memory does) and input size. Turning nodes into the DAG model is `parse`'s job.

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YamlSpan};

/// Deepest nesting of sequences and mappings a DAG file may use.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to, aliases included.
pub const MAX_NODES: usize = 200_000;
/// Largest DAG file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;

/// A position in the source: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where a node sits in the source: its start and its length in characters on its first line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: Pos,
    /// Characters to underline, at least 1.
    pub len: usize,
}

impl Span {
    pub fn at(line: usize, column: usize, len: usize) -> Self {
        Span {
            start: Pos { line, column },
            len: len.max(1),
        }
    }

    fn from_yaml(span: &YamlSpan) -> Self {
        let start = Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let len = if span.end.line() == span.start.line() {
            span.end.col().saturating_sub(span.start.col())
        } else {
            1
        };
        Span {
            start,
            len: len.max(1),
        }
    }
}

/// How a scalar was written; block scalars keep their content line by line, which lets SQL
/// errors inside a `|` block point at the right source line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Literal,
    Folded,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String, Style),
    Seq(Vec<Node>),
    /// Entries in source order; duplicate keys are kept so the loader can report them.
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    /// The YAML type name used in "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(..) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s, _) => Some(s),
            _ => None,
        }
    }

    /// The scalar as the text a user wrote, for values that may be given as numbers or strings.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s, _) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Converts to JSON for template contexts and hashing; `None` for mappings with non-string keys.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s, _) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Why a document could not be turned into a tree at all.
#[derive(Clone, Debug, PartialEq)]
pub struct YamlError {
    pub message: String,
    pub span: Span,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}:{}",
            self.message, self.span.start.line, self.span.start.column
        )
    }
}

/// Parses one YAML document. `Ok(None)` means the file holds no document (empty or comments).
pub fn parse_document(text: &str) -> Result<Option<Node>, YamlError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(YamlError {
            message: format!(
                "file is {} bytes; DAG files may be at most {} bytes",
                text.len(),
                MAX_FILE_BYTES
            ),
            span: Span::at(1, 1, 1),
        });
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let mut root = None;
    let mut documents = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| YamlError {
            message: format!("invalid YAML: {}", e.info()),
            span: Span::at(e.marker().line(), e.marker().col() + 1, 1),
        })?;
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        message: "a DAG file holds one YAML document; found a second `---`".into(),
                        span: Span::from_yaml(&span),
                    });
                }
            }
            other => {
                if let Some(node) = builder.push(other, &span)? {
                    root = Some(node);
                }
            }
        }
    }
    Ok(root)
}

enum Frame {
    Seq {
        anchor: usize,
        span: Span,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        span: Span,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<usize, Node>,
    nodes: usize,
}

impl Builder {
    fn count(&mut self, added: usize, span: Span) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(added);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                message: format!(
                    "document expands to more than {MAX_NODES} values (an alias bomb?); refusing to load it"
                ),
                span,
            });
        }
        Ok(())
    }

    /// Feeds one event; returns the root once the top-level node is complete.
    fn push(&mut self, event: Event<'_>, yaml_span: &YamlSpan) -> Result<Option<Node>, YamlError> {
        let span = Span::from_yaml(yaml_span);
        let finished = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, span)?;
                let node = Node {
                    value: resolve_scalar(&text, style, tag.is_some()),
                    span,
                };
                self.remember(anchor, &node);
                Some(node)
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        message: "alias refers to an unknown anchor".into(),
                        span,
                    });
                };
                self.count(count_nodes(&target), span)?;
                Some(Node {
                    value: target.value,
                    span,
                })
            }
            Event::SequenceStart(anchor, _) => {
                self.open(span)?;
                self.stack.push(Frame::Seq {
                    anchor,
                    span,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                self.open(span)?;
                self.stack.push(Frame::Map {
                    anchor,
                    span,
                    entries: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    anchor,
                    span,
                    items,
                }) => {
                    let node = Node {
                        value: Value::Seq(items),
                        span,
                    };
                    self.remember(anchor, &node);
                    Some(node)
                }
                _ => return Err(unbalanced(span)),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    anchor,
                    span,
                    entries,
                    ..
                }) => {
                    let node = Node {
                        value: Value::Map(entries),
                        span,
                    };
                    self.remember(anchor, &node);
                    Some(node)
                }
                _ => return Err(unbalanced(span)),
            },
            _ => None,
        };
        let Some(node) = finished else {
            return Ok(None);
        };
        match self.stack.last_mut() {
            None => Ok(Some(node)),
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(None)
            }
            Some(Frame::Map { entries, key, .. }) => {
                match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                }
                Ok(None)
            }
        }
    }

    fn open(&mut self, span: Span) -> Result<(), YamlError> {
        self.count(1, span)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError {
                message: format!("nesting is deeper than {MAX_DEPTH} levels; refusing to load it"),
                span,
            });
        }
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }
}

fn unbalanced(span: Span) -> YamlError {
    YamlError {
        message: "invalid YAML: unbalanced collection".into(),
        span,
    }
}

fn count_nodes(node: &Node) -> usize {
    // Iterative so that counting cannot overflow the stack whatever the shape.
    let mut total = 0usize;
    let mut pending = vec![node];
    while let Some(n) = pending.pop() {
        total += 1;
        match &n.value {
            Value::Seq(items) => pending.extend(items.iter()),
            Value::Map(entries) => {
                for (k, v) in entries {
                    pending.push(k);
                    pending.push(v);
                }
            }
            _ => {}
        }
    }
    total
}

/// YAML 1.2 core schema resolution for plain scalars; quoted and block scalars are strings.
fn resolve_scalar(text: &str, style: ScalarStyle, tagged: bool) -> Value {
    let style = match style {
        ScalarStyle::Plain => Style::Plain,
        ScalarStyle::Literal => Style::Literal,
        ScalarStyle::Folded => Style::Folded,
        _ => Style::Quoted,
    };
    if style != Style::Plain || tagged {
        return Value::Str(text.to_string(), style);
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Int(i);
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric && let Ok(f) = text.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(text.to_string(), Style::Plain)
}

/// A template string and where its text starts, so errors inside it can be located.
#[derive(Clone, Debug)]
pub struct Located {
    pub text: String,
    pub span: Span,
    pub style: Style,
}

impl Located {
    /// Maps a 1-based (line, column) inside the text to the file's (line, column).
    pub fn file_position(&self, line: usize, column: usize) -> (usize, usize) {
        match self.style {
            // A block scalar's span starts at its first content character, and every content
            // line is indented as far as the first.
            Style::Literal | Style::Folded => (
                self.span.start.line + line.saturating_sub(1),
                self.span.start.column + column.saturating_sub(1),
            ),
            Style::Quoted => {
                if line <= 1 {
                    (self.span.start.line, self.span.start.column + column)
                } else {
                    (self.span.start.line + line - 1, column)
                }
            }
            Style::Plain => {
                if line <= 1 {
                    (
                        self.span.start.line,
                        self.span.start.column + column.saturating_sub(1),
                    )
                } else {
                    (self.span.start.line + line - 1, column)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_positions_map_into_the_file() {
        let located = Located {
            text: "SELECT 1\nFROM x".into(),
            span: Span::at(10, 7, 1),
            style: Style::Literal,
        };
        assert_eq!(located.file_position(1, 1), (10, 7));
        assert_eq!(located.file_position(2, 6), (11, 12));
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        let doc = parse_document("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 2026-01-01\n")
            .unwrap()
            .unwrap();
        let Value::Map(entries) = doc.value else {
            panic!("not a map")
        };
        let values: Vec<_> = entries.into_iter().map(|(_, v)| v.value).collect();
        assert_eq!(values[0], Value::Int(1));
        assert_eq!(values[1], Value::Float(1.5));
        assert_eq!(values[2], Value::Bool(true));
        assert_eq!(values[3], Value::Null);
        assert_eq!(values[4], Value::Str("1".into(), Style::Quoted));
        assert_eq!(values[5], Value::Str("2026-01-01".into(), Style::Plain));
    }

    #[test]
    fn positions_are_one_based() {
        let doc = parse_document("dag: x\ntasks:\n  a: 1\n").unwrap().unwrap();
        let Value::Map(entries) = doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries[1].0.span.start, Pos { line: 2, column: 1 });
        let Value::Map(inner) = &entries[1].1.value else {
            panic!("not a map")
        };
        assert_eq!(inner[0].0.span.start, Pos { line: 3, column: 3 });
        assert_eq!(inner[0].0.span.len, 1);
    }

    #[test]
    fn alias_bomb_hits_the_node_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse_document(&text).unwrap_err();
        assert!(err.message.contains("alias bomb"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        let err = parse_document(&text).unwrap_err();
        assert!(
            err.message.contains("nesting") || err.message.contains("recursion"),
            "{err}"
        );
        let block: String = (0..200)
            .map(|i| format!("{}- \n", " ".repeat(i * 2)))
            .collect();
        assert!(parse_document(&block).is_err());
    }

    #[test]
    fn empty_and_comment_only_files_hold_no_document() {
        assert_eq!(parse_document("").unwrap(), None);
        assert_eq!(parse_document("# nothing here\n").unwrap(), None);
    }
}
