//! Map a key path such as `devices[4].modbus.unit` to its 1-based line in a TOML file.
//!
//! Uses the spans `toml_edit` keeps when it parses. A path that does not exist (a missing
//! key, an element that is not there) falls back to the nearest existing parent, so a
//! "missing key" problem points at the table that lacks it.

use std::ops::Range;

use toml_edit::{Document, Item, Table, TomlError, Value};

/// One parsed file, able to answer "which line is this key on?".
#[derive(Debug)]
pub struct Locator {
    doc: Document<String>,
    line_starts: Vec<usize>,
}

/// A step in a key path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// A table key.
    Key(&'a str),
    /// An array (or array-of-tables) index.
    Index(usize),
}

/// Splits `a.b[3].c` into `[Key(a), Key(b), Index(3), Key(c)]`. Malformed indices are kept
/// as keys, which simply do not resolve.
pub fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else {
                out.push(Segment::Key(rest));
                break;
            };
            match stripped[..end].parse::<usize>() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => out.push(Segment::Key(&stripped[..end])),
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl Locator {
    /// Parses `text`, keeping spans.
    pub fn parse(text: String) -> Result<Self, TomlError> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let doc = Document::parse(text)?;
        Ok(Locator { doc, line_starts })
    }

    /// The 1-based line holding byte `offset`.
    pub fn line_at(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// The line of `path`, or of its nearest existing parent; `None` when not even the
    /// first segment exists.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut node = Node::Table(self.doc.as_table());
        let mut best = None;
        for seg in segments(path) {
            match step(node, seg) {
                Some((next, span)) => {
                    if let Some(span) = span {
                        best = Some(self.line_at(span.start));
                    }
                    node = next;
                }
                None => break,
            }
        }
        best
    }
}

fn table_span(t: &Table) -> Option<Range<usize>> {
    t.span().or_else(|| {
        t.iter()
            .filter_map(|(k, _)| t.key(k).and_then(|k| k.span()))
            .min_by_key(|r| r.start)
    })
}

fn step<'a>(node: Node<'a>, seg: Segment<'_>) -> Option<(Node<'a>, Option<Range<usize>>)> {
    let node = match node {
        Node::Item(Item::Table(t)) => Node::Table(t),
        Node::Item(Item::Value(v)) => Node::Value(v),
        other => other,
    };
    match (node, seg) {
        (Node::Table(t), Segment::Key(k)) => {
            let item = t.get(k)?;
            let span = t.key(k).and_then(|k| k.span()).or_else(|| match item {
                Item::Table(t) => table_span(t),
                other => other.span(),
            });
            Some((Node::Item(item), span))
        }
        (Node::Value(Value::InlineTable(it)), Segment::Key(k)) => {
            let v = it.get(k)?;
            let span = it.key(k).and_then(|k| k.span()).or_else(|| v.span());
            Some((Node::Value(v), span))
        }
        (Node::Item(Item::ArrayOfTables(a)), Segment::Index(i)) => {
            let t = a.get(i)?;
            Some((Node::Table(t), table_span(t)))
        }
        (Node::Value(Value::Array(a)), Segment::Index(i)) => {
            let v = a.get(i)?;
            Some((Node::Value(v), v.span()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# a site
[site]
id = "dc"
ups.redundancy = "N+1"

[site.genset]
redundancy = "N+1"

[priority.targets]
P1 = { target_hours = 3, clock = "24x7" }
P2 = { target_hours = 8,
       clock = "working_hours" }

[[devices]]
id = "ups-1"
modbus = { endpoint = "127.0.0.1:15001", unit = 1 }

[[devices]]
id = "ups-2"
modbus = { endpoint = "127.0.0.1:15001",
           unit = 2 }

[[points]]
name = "a"
never_read = [
  { register = "holding", start = 1, count = 2 },
  { register = "input", start = 5, count = 2 },
]
"#;

    fn loc() -> Locator {
        Locator::parse(TEXT.to_string()).unwrap()
    }

    #[test]
    fn splits_paths() {
        assert_eq!(
            segments("devices[4].modbus.unit"),
            vec![
                Segment::Key("devices"),
                Segment::Index(4),
                Segment::Key("modbus"),
                Segment::Key("unit")
            ]
        );
        assert_eq!(
            segments("a[1][2]"),
            vec![Segment::Key("a"), Segment::Index(1), Segment::Index(2)]
        );
    }

    #[test]
    fn finds_keys_in_tables_dotted_keys_and_inline_tables() {
        let l = loc();
        assert_eq!(l.line_of("site.id"), Some(3));
        assert_eq!(l.line_of("site.ups.redundancy"), Some(4));
        assert_eq!(l.line_of("site.genset.redundancy"), Some(7));
        assert_eq!(l.line_of("site.genset"), Some(6));
        assert_eq!(l.line_of("priority.targets.P1.target_hours"), Some(10));
        assert_eq!(l.line_of("priority.targets.P2.clock"), Some(12));
        assert_eq!(l.line_of("devices[0].modbus.unit"), Some(16));
        assert_eq!(l.line_of("devices[1].modbus.unit"), Some(21));
        assert_eq!(l.line_of("devices[1]"), Some(18));
        assert_eq!(l.line_of("points[0].never_read[1].start"), Some(27));
    }

    #[test]
    fn falls_back_to_the_nearest_existing_parent() {
        let l = loc();
        assert_eq!(l.line_of("devices[1].profile"), Some(18));
        assert_eq!(l.line_of("devices[7].profile"), Some(14));
        assert_eq!(l.line_of("site.genset.rating"), Some(6));
        assert_eq!(l.line_of("priority.targets.P3.clock"), Some(9));
        assert_eq!(l.line_of("nothing.here"), None);
    }
}
