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

impl From<LimitError> for YamlError {
    fn from(e: LimitError) -> Self {
        let line = match &e {
            LimitError::TooLarge { .. } => None,
            LimitError::TooDeep { line, .. } => Some(*line),
        };
        YamlError {
            message: e.to_string(),
            line,
            column: None,
        }
    }
}

/// Largest YAML text Quorum parses (4 MiB). Pigsty inventories are well under 1 MiB, and
/// Patroni's and vip-manager's configs a few KiB; libyaml's time and memory grow fast with
/// size (a 50 MB inventory ran for over ten minutes), so anything bigger is refused unread.
pub const MAX_YAML_BYTES: usize = 4 * 1024 * 1024;

/// Deepest nesting of collections Quorum parses: flow `[`/`{` and block indentation together.
/// Pigsty's files nest about ten levels; libyaml's time is quadratic in flow depth (32 000
/// `[` took six seconds), so deeper input is refused before any parser sees it.
pub const MAX_YAML_DEPTH: usize = 64;

/// Why a YAML text is refused before parsing: too big or too deeply nested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// More bytes than [`MAX_YAML_BYTES`].
    #[error("it is {size} bytes, over Quorum's limit of {limit} bytes for a YAML file")]
    TooLarge {
        /// The text's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Collections nested deeper than [`MAX_YAML_DEPTH`].
    #[error("its collections nest deeper than {limit} levels at line {line}, over Quorum's limit")]
    TooDeep {
        /// 1-based line where the limit was crossed.
        line: usize,
        /// The limit.
        limit: usize,
    },
}

/// Checks `text` against [`MAX_YAML_BYTES`] and [`MAX_YAML_DEPTH`] in one linear pass, before
/// a parser sees it. Every parse of outside YAML goes through it ([`from_str`] and
/// [`parse_spanned`] call it).
///
/// The depth is counted lexically: flow brackets outside quoted scalars and comments, plus
/// the block indentation levels open at each line (each `- ` of a compact nested list is a
/// level). It may count a level more than the parser would (a plain scalar after `- `), never
/// much fewer: a block list written at its key's indentation is the one level it cannot see.
pub fn check_limits(text: &str) -> Result<(), LimitError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(LimitError::TooLarge {
            size: text.len(),
            limit: MAX_YAML_BYTES,
        });
    }
    let mut scan = DepthScan::default();
    for (i, line) in text.split('\n').enumerate() {
        scan.line(i + 1, line.as_bytes())?;
    }
    Ok(())
}

/// The state of [`check_limits`] between lines.
#[derive(Default)]
struct DepthScan {
    /// Open flow collections.
    flow: usize,
    /// Columns of the open block collections.
    block: Vec<usize>,
    /// Inside a quoted scalar (`'` or `"`) that goes on past the line.
    quote: Option<u8>,
    /// Inside a block scalar (`|`, `>`) whose parent line had this indentation.
    block_scalar: Option<usize>,
    /// The next character may start a node (so `[`, `{`, a quote open one).
    node_start: bool,
    /// The last token closed a quoted scalar or a flow collection (in flow, `:` may follow).
    closed: bool,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

impl DepthScan {
    fn check(&self, line: usize) -> Result<(), LimitError> {
        if self.block.len() + self.flow > MAX_YAML_DEPTH {
            return Err(LimitError::TooDeep {
                line,
                limit: MAX_YAML_DEPTH,
            });
        }
        Ok(())
    }

    fn line(&mut self, n: usize, bytes: &[u8]) -> Result<(), LimitError> {
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let blank = bytes[indent..].iter().all(|&b| is_blank(b));
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return Ok(());
            }
            self.block_scalar = None;
        }
        let mut i = 0;
        if self.quote.is_none() && self.flow == 0 {
            // A line in block context: its indentation opens or closes block collections.
            if blank || bytes[indent] == b'#' {
                return Ok(());
            }
            let marker = |m: &[u8]| {
                indent == 0 && bytes.starts_with(m) && bytes.get(3).is_none_or(|&b| is_blank(b))
            };
            if marker(b"...") || (indent == 0 && bytes[0] == b'%') {
                self.block.clear();
                return Ok(());
            }
            if marker(b"---") {
                self.block.clear();
                i = 3;
            } else {
                while self.block.last().is_some_and(|&top| top >= indent) {
                    self.block.pop();
                }
                self.block.push(indent);
                self.check(n)?;
                i = indent;
                // `- - a` or `- key: v`: each compact entry opens a level at its content.
                while matches!(bytes.get(i), Some(b'-' | b'?' | b':'))
                    && bytes.get(i + 1).is_none_or(|&b| is_blank(b))
                {
                    let mut j = i + 1;
                    while bytes.get(j).is_some_and(|&b| is_blank(b)) {
                        j += 1;
                    }
                    if j >= bytes.len() || bytes[j] == b'#' {
                        break;
                    }
                    self.block.push(j);
                    self.check(n)?;
                    i = j;
                }
            }
            self.node_start = true;
            self.closed = false;
        }
        let mut prev_blank = true;
        while i < bytes.len() {
            let b = bytes[i];
            let next = bytes.get(i + 1).copied();
            if let Some(q) = self.quote {
                if q == b'"' && b == b'\\' {
                    i += 2;
                    continue;
                }
                if b == q {
                    if q == b'\'' && next == Some(b'\'') {
                        i += 2;
                        continue;
                    }
                    self.quote = None;
                    self.node_start = false;
                    self.closed = true;
                }
                prev_blank = false;
                i += 1;
                continue;
            }
            let ends_token = next.is_none_or(is_blank);
            match b {
                _ if is_blank(b) => {}
                b'#' if prev_blank => break,
                b'[' | b'{' if self.flow > 0 || self.node_start => {
                    self.flow += 1;
                    self.check(n)?;
                    self.node_start = true;
                    self.closed = false;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.node_start = false;
                    self.closed = true;
                }
                b',' if self.flow > 0 => {
                    self.node_start = true;
                    self.closed = false;
                }
                b'\'' | b'"' if self.node_start => self.quote = Some(b),
                b':' if ends_token
                    || (self.flow > 0
                        && (self.closed
                            || matches!(next, Some(b',' | b'[' | b']' | b'{' | b'}')))) =>
                {
                    self.node_start = true;
                    self.closed = false;
                }
                b'-' | b'?' if self.node_start && ends_token => {}
                b'|' | b'>' if self.node_start && self.flow == 0 => {
                    // The rest of the line is the header; the lines indented deeper are text.
                    self.block_scalar = Some(indent);
                    return Ok(());
                }
                b'&' | b'!' if self.node_start => {
                    // An anchor or a tag: the node it decorates starts after it.
                    let in_flow = self.flow > 0;
                    let ends = |c: u8| {
                        is_blank(c) || (in_flow && matches!(c, b',' | b'[' | b']' | b'{' | b'}'))
                    };
                    while bytes.get(i + 1).is_some_and(|&c| !ends(c)) {
                        i += 1;
                    }
                }
                _ => {
                    self.node_start = false;
                    self.closed = false;
                }
            }
            prev_blank = is_blank(b);
            i += 1;
        }
        Ok(())
    }
}

/// Deserializes a value of type `T` from YAML text (refused unparsed when over the limits of
/// [`check_limits`]).
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    check_limits(text)?;
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
    check_limits(text)?;
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

    fn deep(text: &str) -> Option<usize> {
        match check_limits(text) {
            Err(LimitError::TooDeep { line, limit }) => {
                assert_eq!(limit, MAX_YAML_DEPTH);
                Some(line)
            }
            Err(e) => panic!("{e}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        // The probe's inventory (L1): libyaml took 6 s on it.
        let probe = format!(
            "all:\n  vars:\n    x: {}{}\n",
            "[".repeat(32_000),
            "]".repeat(32_000)
        );
        assert_eq!(deep(&probe), Some(3));
        let err = from_str::<Value>(&probe).unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(
            err.message.contains("deeper than 64 levels at line 3"),
            "{}",
            err.message
        );
        assert!(parse_spanned(&probe).is_err());
        for n in [20, 50] {
            let ok = format!("a:\n  b: {}{}\n", "[".repeat(n), "]".repeat(n));
            assert_eq!(deep(&ok), None, "{n}");
            assert!(from_str::<Value>(&ok).is_ok());
        }
        let braces = format!("a: {}\n", "{b: ".repeat(100));
        assert_eq!(deep(&braces), Some(1));
        // Multi-line flow collections count across lines.
        let lines = format!("a:\n{}", "  [\n".repeat(100));
        assert!(deep(&lines).is_some());
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("{}k{i}:\n", " ".repeat(i * 2)));
        }
        assert_eq!(deep(&text), Some(MAX_YAML_DEPTH + 1));
        let compact = format!("{}x\n", "- ".repeat(100));
        assert_eq!(deep(&compact), Some(1));
        let mut ok = String::new();
        for i in 0..30 {
            ok.push_str(&format!("{}k{i}:\n", " ".repeat(i * 2)));
        }
        assert_eq!(deep(&ok), None);
        assert!(from_str::<Value>(&ok).is_ok());
    }

    #[test]
    fn brackets_that_open_nothing_are_not_counted() {
        let many = "[".repeat(1000);
        for text in [
            format!("a: '{many}'\nb: 1\n"),
            format!("a: \"{many}\\\" {many}\"\n"),
            format!("a: 'it''s {many}\n  {many}'\n"),
            format!("a: 1 # {many}\n# {many}\n"),
            format!("a: x{many}\n"),
            format!("a: |\n  {many}\n\n  {many}\nb: >-\n    {many}\nc: 1\n"),
            format!("- |\n {many}\n- [\"{many}\", '{many}']\n"),
            format!("a: [b, \"c\":d, 'e{many}']\n"),
            "a: &anchor !!str x\nb: *anchor\n".to_string(),
        ] {
            assert_eq!(deep(&text), None, "{text}");
            from_str::<Value>(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        // After a quote closes, brackets count again.
        let after = format!("a: ['x', {}{}]\n", "[".repeat(100), "]".repeat(100));
        assert!(deep(&after).is_some());
        // Anchors and tags do not hide a collection.
        let tagged = format!("a: &x !!seq {}\n", "[".repeat(100));
        assert!(deep(&tagged).is_some());
    }

    #[test]
    fn oversize_text_is_refused_unread() {
        let big = "#".repeat(MAX_YAML_BYTES + 1);
        let err = check_limits(&big).unwrap_err();
        assert_eq!(
            err,
            LimitError::TooLarge {
                size: MAX_YAML_BYTES + 1,
                limit: MAX_YAML_BYTES
            }
        );
        assert!(err
            .to_string()
            .contains("over Quorum's limit of 4194304 bytes"));
        assert!(from_str::<Value>(&big).is_err());
        // Just under the limit is scanned, and fast (the scan is linear).
        let start = std::time::Instant::now();
        let ok = "k: [a, 'b', {c: d}]  # x\n".repeat(MAX_YAML_BYTES / 26);
        assert!(check_limits(&ok).is_ok());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    proptest::proptest! {
        /// Any text, however broken, gets an answer from the scan, never a panic.
        #[test]
        fn the_scan_never_panics(text in "[-?:\\[\\]{}'\"#|>&!*,%. \n\ta-z\\\\]{0,200}") {
            let _ = check_limits(&text);
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(MAX_SPANNED_DEPTH + 5);
        assert!(parse_spanned(&deep).is_err());
    }
}
