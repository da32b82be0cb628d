//! Where keys and values sit in a JSON document: positions for problems (file:line:column)
//! and byte ranges for edits that change one value and leave every other byte alone.
//!
//! The syntax tree comes from jsonc-parser (strict JSON options), the only JSON parser at hand
//! that keeps byte ranges; serde_json decides validity, this only places things.

/// One step of a path into the JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Positions of keys and values in a JSON document, found by walking its syntax tree along a
/// path when asked: a file of 10,000 schedules asks for about as many positions as it has
/// entries, so nothing is indexed up front but the line starts.
pub(crate) struct Spans<'a> {
    tree: Option<jsonc_parser::ast::Value<'a>>,
    /// Byte offset where each line starts, for a binary search from offset to line.
    line_starts: Vec<usize>,
}

impl<'a> Spans<'a> {
    pub(crate) fn build(text: &'a str) -> Spans<'a> {
        let options = jsonc_parser::ParseOptions {
            allow_comments: false,
            allow_loose_object_property_names: false,
            allow_trailing_commas: false,
            ..Default::default()
        };
        let tree = jsonc_parser::parse_to_ast(text, &Default::default(), &options)
            .ok()
            .and_then(|r| r.value);
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Spans { tree, line_starts }
    }

    /// Byte offset of the deepest node along `path` (of its key when `key` and the whole path
    /// was found, else of its value).
    pub(crate) fn offset(&self, path: &[Seg], key: bool) -> Option<usize> {
        use jsonc_parser::ast::Value;
        use jsonc_parser::common::Ranged;
        let mut node = self.tree.as_ref()?;
        let mut found = node.start();
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            match (seg, node) {
                (Seg::Key(k), Value::Object(object)) => {
                    let Some(prop) = object.properties.iter().find(|p| p.name.as_str() == k) else {
                        break;
                    };
                    found = if last && key {
                        prop.name.start()
                    } else {
                        prop.value.start()
                    };
                    node = &prop.value;
                }
                (Seg::Index(i), Value::Array(array)) => {
                    let Some(element) = array.elements.get(*i) else {
                        break;
                    };
                    found = element.start();
                    node = element;
                }
                _ => break,
            }
        }
        Some(found)
    }

    /// 1-based line and column (in characters) of `path`; see [`Spans::offset`].
    pub(crate) fn position(&self, text: &str, path: &[Seg], key: bool) -> (usize, usize) {
        let Some(offset) = self.offset(path, key) else {
            return (1, 1);
        };
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = text.get(start..offset).map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }
}

/// An object's byte range (braces included) and each property's (key to value), in order.
pub(crate) struct ObjectSpan {
    pub whole: std::ops::Range<usize>,
    pub properties: Vec<(String, std::ops::Range<usize>)>,
}

impl<'a> Spans<'a> {
    /// The node at `path`, when the whole path exists.
    fn node(&self, path: &[Seg]) -> Option<&jsonc_parser::ast::Value<'a>> {
        use jsonc_parser::ast::Value;
        let mut node = self.tree.as_ref()?;
        for seg in path {
            node = match (seg, node) {
                (Seg::Key(k), Value::Object(object)) => {
                    &object
                        .properties
                        .iter()
                        .find(|p| p.name.as_str() == k)?
                        .value
                }
                (Seg::Index(i), Value::Array(array)) => array.elements.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The byte range of the value at `path`, when the whole path exists.
    pub(crate) fn value_range(&self, path: &[Seg]) -> Option<std::ops::Range<usize>> {
        use jsonc_parser::common::Ranged;
        let node = self.node(path)?;
        Some(node.start()..node.end())
    }

    /// The object at `path`, when it exists and is an object.
    pub(crate) fn object(&self, path: &[Seg]) -> Option<ObjectSpan> {
        use jsonc_parser::ast::Value;
        use jsonc_parser::common::Ranged;
        let Value::Object(object) = self.node(path)? else {
            return None;
        };
        Some(ObjectSpan {
            whole: object.start()..object.end(),
            properties: object
                .properties
                .iter()
                .map(|p| (p.name.as_str().to_string(), p.start()..p.end()))
                .collect(),
        })
    }
}
