//! The one place Quorum names its YAML libraries. Everything else goes through these items, so
//! swapping a library touches this file only.
//!
//! Two libraries, two jobs:
//! - `serde_yaml_ng` (a maintained fork of the deprecated `serde_yaml`, on libyaml) gives the
//!   *values*: [`from_str`], [`to_string`], [`Value`], [`Mapping`]. It is the authority on what a
//!   document means.
//! - `saphyr-parser` (a pure-Rust YAML 1.2 event parser) gives the *positions*: [`parse_spanned`]
//!   returns a [`Node`] tree where every node knows the byte offset, line and column it starts
//!   at. The inventory uses it to name the line of a bad host; the patchers use it to edit one
//!   value in place without touching any other byte.
//!
//! Callers that use both parse the text with [`from_str`] first, and treat the spanned tree
//! only as a map of where things are.

use saphyr_parser::{Event, Parser, ScanError};
pub use serde_yaml_ng::{Mapping, Value};

/// A YAML parse or schema error, with the line and column where the library knows them.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// The library's message (it includes line and column when known).
    pub message: String,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// 1-based column of the problem, when known.
    pub column: Option<usize>,
}

impl From<serde_yaml_ng::Error> for YamlError {
    fn from(e: serde_yaml_ng::Error) -> Self {
        let loc = e.location();
        YamlError {
            message: e.to_string(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
        }
    }
}

impl From<ScanError> for YamlError {
    fn from(e: ScanError) -> Self {
        let m = e.marker();
        YamlError {
            message: format!("{} at line {} column {}", e.info(), m.line(), m.col() + 1),
            line: Some(m.line()),
            column: Some(m.col() + 1),
        }
    }
}

/// Deserializes a value of type `T` from YAML text.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml_ng::from_str(text).map_err(YamlError::from)
}

/// Serializes `value` as YAML text.
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, YamlError> {
    serde_yaml_ng::to_string(value).map_err(YamlError::from)
}

/// Deepest nesting [`parse_spanned`] accepts; deeper input is refused rather than risking the
/// stack (libyaml's own limit is lower, so no document [`from_str`] accepts is refused here).
pub const MAX_SPANNED_DEPTH: usize = 512;

/// Where a node starts in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Byte offset into the text (always on a `char` boundary).
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

/// How a scalar was written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// `word` (no quotes).
    Plain,
    /// `'word'`.
    SingleQuoted,
    /// `"word"`.
    DoubleQuoted,
    /// `|` block scalar.
    Literal,
    /// `>` block scalar.
    Folded,
}

/// One node of a document parsed by [`parse_spanned`].
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts: the first character of a scalar (its opening quote when quoted),
    /// the `[`/`{` of a flow collection, the first `-` or first key of a block collection.
    pub start: Pos,
    /// Whether the node carries an anchor (`&name`); editing it would change its aliases too.
    pub anchored: bool,
    /// Whether the node carries an explicit tag (`!!str`, `!vault`, ...).
    pub tagged: bool,
    /// What the node is.
    pub kind: NodeKind,
}

/// The shape of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar: its value after unquoting and folding, and how it was written.
    Scalar {
        /// The value (for a plain scalar, the source text before type resolution).
        value: String,
        /// How it was written.
        style: ScalarStyle,
    },
    /// A sequence.
    Seq {
        /// The items, in order.
        items: Vec<Node>,
        /// `true` for `[a, b]`, `false` for `- a` lines.
        flow: bool,
        /// For a flow sequence, the position of its closing `]`.
        close: Option<Pos>,
    },
    /// A mapping, entries in source order.
    Map {
        /// `(key, value)` pairs.
        entries: Vec<(Node, Node)>,
        /// `true` for `{a: 1}`, `false` for `a: 1` lines.
        flow: bool,
    },
    /// An alias (`*name`); the spanned tree does not resolve it.
    Alias,
}

impl Node {
    /// For a mapping, the value of the first entry whose key is the scalar `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.get_entry(key).map(|(_, v)| v)
    }

    /// For a mapping, the first `(key node, value node)` whose key is the scalar `key`.
    pub fn get_entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            NodeKind::Map { entries, .. } => entries
                .iter()
                .find(|(k, _)| k.scalar() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The value of a scalar node.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// For a scalar node, the byte offset just past its source token in `text` (the closing
    /// quote of a quoted scalar, the last character of a plain one).
    ///
    /// Returns `None` for styles whose end is not a single token (block scalars), for plain
    /// scalars that span several lines (their source text differs from their value), and when
    /// `text` is not the text the node was parsed from.
    pub fn scalar_end(&self, text: &str) -> Option<usize> {
        let NodeKind::Scalar { value, style } = &self.kind else {
            return None;
        };
        let rest = text.get(self.start.offset..)?;
        match style {
            // A one-line plain scalar is its value verbatim; anything else (folded lines)
            // cannot be edited as one token.
            ScalarStyle::Plain => rest
                .starts_with(value.as_str())
                .then(|| self.start.offset + value.len()),
            ScalarStyle::SingleQuoted => {
                let mut chars = rest.char_indices().skip(1).peekable();
                while let Some((i, c)) = chars.next() {
                    if c == '\'' {
                        // `''` is an escaped quote inside the scalar.
                        if chars.peek().map(|&(_, n)| n) == Some('\'') {
                            chars.next();
                        } else {
                            return Some(self.start.offset + i + 1);
                        }
                    }
                }
                None
            }
            ScalarStyle::DoubleQuoted => {
                let mut chars = rest.char_indices().skip(1);
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => return Some(self.start.offset + i + 1),
                        _ => {}
                    }
                }
                None
            }
            ScalarStyle::Literal | ScalarStyle::Folded => None,
        }
    }
}

/// Converts saphyr's character indexes into byte offsets.
struct Offsets<'a> {
    text: &'a str,
    /// `None` when the text is ASCII, where character index == byte offset.
    table: Option<Vec<usize>>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        let table = (!text.is_ascii()).then(|| {
            let mut t: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
            t.push(text.len());
            t
        });
        Offsets { text, table }
    }

    fn pos(&self, m: saphyr_parser::Marker) -> Pos {
        let offset = match &self.table {
            None => m.index().min(self.text.len()),
            Some(t) => t.get(m.index()).copied().unwrap_or(self.text.len()),
        };
        Pos {
            offset,
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// A collection being built while events arrive.
enum Open {
    Seq {
        start: Pos,
        anchored: bool,
        tagged: bool,
        flow: bool,
        items: Vec<Node>,
    },
    Map {
        start: Pos,
        anchored: bool,
        tagged: bool,
        flow: bool,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
}

/// Parses the first document of `text` into a [`Node`] tree that records where each node
/// starts. Returns `Ok(None)` for a text with no document (empty, or only comments).
///
/// Use it for positions only; [`from_str`] is the authority on values (plain scalars here are
/// not resolved to numbers or booleans, and aliases are not expanded).
pub fn parse_spanned(text: &str) -> Result<Option<Node>, YamlError> {
    let offsets = Offsets::new(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    for item in Parser::new_from_str(text) {
        let (event, span) = item?;
        let start = offsets.pos(span.start);
        let node = match event {
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => continue,
            // Only the first document matters to Quorum's config files.
            Event::DocumentEnd | Event::StreamEnd => break,
            Event::SequenceStart(anchor, tag) => {
                if stack.len() >= MAX_SPANNED_DEPTH {
                    return Err(too_deep(start));
                }
                let flow = text.get(start.offset..).is_some_and(|s| s.starts_with('['));
                stack.push(Open::Seq {
                    start,
                    anchored: anchor != 0,
                    tagged: tag.is_some(),
                    flow,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                if stack.len() >= MAX_SPANNED_DEPTH {
                    return Err(too_deep(start));
                }
                let flow = text.get(start.offset..).is_some_and(|s| s.starts_with('{'));
                stack.push(Open::Map {
                    start,
                    anchored: anchor != 0,
                    tagged: tag.is_some(),
                    flow,
                    entries: Vec::new(),
                    pending_key: None,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq {
                    start: s,
                    anchored,
                    tagged,
                    flow,
                    items,
                }) => {
                    // The end event of a flow sequence sits on its `]`.
                    let close = (flow
                        && text.get(start.offset..).is_some_and(|t| t.starts_with(']')))
                    .then_some(start);
                    Node {
                        start: s,
                        anchored,
                        tagged,
                        kind: NodeKind::Seq { items, flow, close },
                    }
                }
                _ => return Err(unbalanced(start)),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map {
                    start: s,
                    anchored,
                    tagged,
                    flow,
                    entries,
                    ..
                }) => Node {
                    start: s,
                    anchored,
                    tagged,
                    kind: NodeKind::Map { entries, flow },
                },
                _ => return Err(unbalanced(start)),
            },
            Event::Scalar(value, style, anchor, tag) => Node {
                start,
                anchored: anchor != 0,
                tagged: tag.is_some(),
                kind: NodeKind::Scalar {
                    value: value.into_owned(),
                    style: match style {
                        saphyr_parser::ScalarStyle::Plain => ScalarStyle::Plain,
                        saphyr_parser::ScalarStyle::SingleQuoted => ScalarStyle::SingleQuoted,
                        saphyr_parser::ScalarStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
                        saphyr_parser::ScalarStyle::Literal => ScalarStyle::Literal,
                        saphyr_parser::ScalarStyle::Folded => ScalarStyle::Folded,
                    },
                },
            },
            Event::Alias(_) => Node {
                start,
                anchored: false,
                tagged: false,
                kind: NodeKind::Alias,
            },
        };
        match stack.last_mut() {
            None => {
                root = Some(node);
                break;
            }
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
    Ok(root)
}

fn too_deep(at: Pos) -> YamlError {
    YamlError {
        message: format!(
            "nesting deeper than {MAX_SPANNED_DEPTH} levels at line {} column {}",
            at.line, at.column
        ),
        line: Some(at.line),
        column: Some(at.column),
    }
}

fn unbalanced(at: Pos) -> YamlError {
    YamlError {
        message: format!(
            "unbalanced collection end at line {} column {}",
            at.line, at.column
        ),
        line: Some(at.line),
        column: Some(at.column),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_name_lines_and_offsets() {
        let text = "a: 1\nb:\n  - 'x'  # c\n  - \"y\\\"\"\nc: [p, q]\né: v\n";
        let root = parse_spanned(text).unwrap().unwrap();
        let (bk, b) = root.get_entry("b").unwrap();
        assert_eq!(bk.start.line, 2);
        let NodeKind::Seq { items, flow, .. } = &b.kind else {
            panic!("not a seq")
        };
        assert!(!flow);
        assert_eq!(items[0].start.line, 3);
        let end = items[0].scalar_end(text).unwrap();
        assert_eq!(&text[items[0].start.offset..end], "'x'");
        let end = items[1].scalar_end(text).unwrap();
        assert_eq!(&text[items[1].start.offset..end], "\"y\\\"\"");
        let c = root.get("c").unwrap();
        let NodeKind::Seq { flow, close, .. } = &c.kind else {
            panic!("not a seq")
        };
        assert!(flow);
        assert_eq!(&text[close.unwrap().offset..][..1], "]");
        let (ek, e) = root.get_entry("é").unwrap();
        assert_eq!(ek.start.line, 6);
        assert_eq!(&text[e.start.offset..], "v\n");
    }

    #[test]
    fn empty_and_broken_texts() {
        assert_eq!(parse_spanned("").unwrap(), None);
        assert_eq!(parse_spanned("# only a comment\n").unwrap(), None);
        let err = parse_spanned("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line.is_some());
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(MAX_SPANNED_DEPTH + 5);
        assert!(parse_spanned(&deep).is_err());
    }
}
