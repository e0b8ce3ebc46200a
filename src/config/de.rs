//! A serde deserializer over `toml::Value` that reports structured errors with key paths
//! and can skip "dead" paths, so that one bad key or element does not hide the others.
//!
//! `deserialize_collecting` deserializes a whole file repeatedly: after each error it marks
//! the offending key (or, for a missing key, the table lacking it) dead and tries again,
//! until the file deserializes or nothing more can be skipped. Dead map keys are not
//! visited; dead array elements are left out of the resulting `Vec`.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    Visitor,
};

/// What went wrong, in terms the configuration report can phrase.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A key the type does not know; `allowed` lists the keys it does.
    UnknownKey {
        key: String,
        allowed: &'static [&'static str],
    },
    /// A required key is absent.
    Missing { key: &'static str },
    /// A value of the wrong type or out of range.
    Invalid { found: String, expected: String },
    /// A string that is not one of an enum's spellings.
    UnknownVariant {
        found: String,
        allowed: &'static [&'static str],
    },
    /// Anything else serde reports.
    Other(String),
}

/// A deserialization error, with the key path where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    /// The problem.
    pub problem: Problem,
    /// Key path of the value (for `Missing`: of the table lacking the key).
    pub path: Option<String>,
}

impl DeError {
    fn new(problem: Problem) -> Self {
        DeError {
            problem,
            path: None,
        }
    }

    fn at(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_string());
        }
        self
    }

    /// The full key path the problem refers to (for a missing key, the key itself).
    pub fn full_path(&self) -> String {
        let base = self.path.clone().unwrap_or_default();
        match &self.problem {
            Problem::Missing { key } => join_key(&base, key),
            _ => base,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}", self.full_path(), self.problem)
    }
}

impl std::error::Error for DeError {}

/// Renders what serde saw, in the report's words: `string "ten"`, `integer 70000`.
pub fn describe_unexpected(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Bool(b) => format!("boolean {b}"),
        Unexpected::Unsigned(n) => format!("integer {n}"),
        Unexpected::Signed(n) => format!("integer {n}"),
        Unexpected::Float(x) => format!("float {x}"),
        Unexpected::Char(c) => format!("string {:?}", c.to_string()),
        Unexpected::Str(s) => format!("string {s:?}"),
        Unexpected::Map => "a table".to_string(),
        Unexpected::Seq => "an array".to_string(),
        other => other.to_string(),
    }
}

/// Rephrases serde's `expecting` texts for primitive types.
fn describe_expected(exp: &str, out_of_range: bool) -> String {
    let int = |range: &str| {
        if out_of_range {
            format!("an integer in {range}")
        } else {
            "an integer".to_string()
        }
    };
    match exp {
        "u8" => int("0..=255"),
        "u16" => int("0..=65535"),
        "u32" => int("0..=4294967295"),
        "u64" | "usize" if out_of_range => "a non-negative integer".to_string(),
        "u64" | "usize" => "an integer".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a borrowed string" | "a string" => "a string".to_string(),
        "a boolean" => "a boolean (true or false)".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        other if other.starts_with("struct ") => "a table".to_string(),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Problem::Other(msg.to_string()))
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Invalid {
            found: describe_unexpected(&unexp),
            expected: describe_expected(&exp.to_string(), false),
        })
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Invalid {
            found: describe_unexpected(&unexp),
            expected: describe_expected(&exp.to_string(), true),
        })
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Invalid {
            found: format!("{len} elements"),
            expected: exp.to_string(),
        })
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Problem::UnknownVariant {
            found: variant.to_string(),
            allowed: expected,
        })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Problem::UnknownKey {
            key: field.to_string(),
            allowed: expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(Problem::Missing { key: field })
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(Problem::Other(format!("duplicate key {field:?}")))
    }
}

/// Appends a key to a path.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The outcome of `deserialize_collecting`.
#[derive(Debug)]
pub struct Collected<T> {
    /// The value, with dead keys and elements left out; `None` when the root itself failed.
    pub value: Option<T>,
    /// Every error met, in order.
    pub errors: Vec<DeError>,
    /// The paths that were skipped.
    pub dead: BTreeSet<String>,
}

/// Deserializes `root` as `T`, collecting every error (see the module doc).
pub fn deserialize_collecting<T: DeserializeOwned>(root: &toml::Value) -> Collected<T> {
    let mut dead = BTreeSet::new();
    let mut errors: Vec<DeError> = Vec::new();
    // Each round marks one more path dead, so the loop ends; the bound is a safety net.
    for _ in 0..10_000 {
        let result = T::deserialize(De {
            value: root,
            path: String::new(),
            dead: &dead,
        });
        let err = match result {
            Ok(v) => {
                return Collected {
                    value: Some(v),
                    errors,
                    dead,
                };
            }
            Err(e) => e,
        };
        let full = err.full_path();
        // A missing key that was reported under another name (or removed because it was
        // bad) is not reported again.
        let already = errors.iter().any(|e| {
            let p = e.full_path();
            p == full || p.starts_with(&format!("{full}.")) || p.starts_with(&format!("{full}["))
        });
        let kill = match &err.problem {
            Problem::Missing { .. } => err.path.clone().unwrap_or_default(),
            _ => full.clone(),
        };
        if !already {
            errors.push(err);
        }
        if kill.is_empty() || !dead.insert(kill) {
            break;
        }
    }
    Collected {
        value: None,
        errors,
        dead,
    }
}

/// The deserializer over one value at one path.
struct De<'a> {
    value: &'a toml::Value,
    path: String,
    dead: &'a BTreeSet<String>,
}

impl<'a> De<'a> {
    fn unexpected(&self) -> Unexpected<'a> {
        match self.value {
            toml::Value::String(s) => Unexpected::Str(s),
            toml::Value::Integer(i) => Unexpected::Signed(*i),
            toml::Value::Float(f) => Unexpected::Float(*f),
            toml::Value::Boolean(b) => Unexpected::Bool(*b),
            toml::Value::Datetime(_) => Unexpected::Other("a date-time"),
            toml::Value::Array(_) => Unexpected::Seq,
            toml::Value::Table(_) => Unexpected::Map,
        }
    }

    fn wrong(&self, expected: &str) -> DeError {
        DeError::new(Problem::Invalid {
            found: describe_unexpected(&self.unexpected()),
            expected: expected.to_string(),
        })
        .at(&self.path)
    }
}

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let r = match self.value {
            toml::Value::String(s) => visitor.visit_str(s),
            toml::Value::Integer(i) => visitor.visit_i64(*i),
            toml::Value::Float(f) => visitor.visit_f64(*f),
            toml::Value::Boolean(b) => visitor.visit_bool(*b),
            toml::Value::Datetime(d) => visitor.visit_string(d.to_string()),
            toml::Value::Array(items) => visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                path: &self.path,
                dead: self.dead,
            }),
            toml::Value::Table(t) => visitor.visit_map(Map {
                iter: t.iter(),
                pending: None,
                path: &self.path,
                dead: self.dead,
            }),
        };
        r.map_err(|e| e.at(&path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            toml::Value::Table(_) => self.deserialize_any(visitor),
            _ => Err(self.wrong("a table")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            toml::Value::Table(_) => self.deserialize_any(visitor),
            _ => Err(self.wrong("a table")),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            toml::Value::Array(_) => self.deserialize_any(visitor),
            _ => Err(self.wrong("an array")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            toml::Value::String(s) => {
                let d: de::value::StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(d).map_err(|e| e.at(&self.path))
            }
            _ => Err(self.wrong("a string")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

struct Seq<'a, I> {
    items: I,
    path: &'a str,
    dead: &'a BTreeSet<String>,
}

impl<'de, 'a, I> SeqAccess<'de> for Seq<'a, I>
where
    I: Iterator<Item = (usize, &'a toml::Value)>,
{
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        for (i, value) in self.items.by_ref() {
            let path = format!("{}[{i}]", self.path);
            if self.dead.contains(&path) {
                continue;
            }
            return seed
                .deserialize(De {
                    value,
                    path: path.clone(),
                    dead: self.dead,
                })
                .map(Some)
                .map_err(|e| e.at(&path));
        }
        Ok(None)
    }
}

struct Map<'a, I> {
    iter: I,
    pending: Option<(String, &'a toml::Value)>,
    path: &'a str,
    dead: &'a BTreeSet<String>,
}

impl<'de, 'a, I> MapAccess<'de> for Map<'a, I>
where
    I: Iterator<Item = (&'a String, &'a toml::Value)>,
{
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (key, value) in self.iter.by_ref() {
            let path = join_key(self.path, key);
            if self.dead.contains(&path) {
                continue;
            }
            let d: de::value::StrDeserializer<'_, DeError> = key.as_str().into_deserializer();
            let k = seed.deserialize(d).map_err(|e| e.at(&path))?;
            self.pending = Some((path, value));
            return Ok(Some(k));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((path, value)) = self.pending.take() else {
            return Err(de::Error::custom("value requested before its key"));
        };
        seed.deserialize(De {
            value,
            path: path.clone(),
            dead: self.dead,
        })
        .map_err(|e| e.at(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        id: String,
        unit: u8,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct File {
        items: Vec<Item>,
        count: u16,
    }

    fn collect(text: &str) -> Collected<File> {
        let v: toml::Value = toml::Value::Table(toml::from_str(text).unwrap());
        deserialize_collecting(&v)
    }

    #[test]
    fn every_bad_element_is_reported_and_skipped() {
        let c = collect(
            r#"
count = 70000
[[items]]
id = "a"
unit = 1
[[items]]
id = "b"
unit = "ten"
colour = "red"
[[items]]
unit = 3
[[items]]
id = "d"
unit = 4
tags = ["x", 5]
"#,
        );
        let got: Vec<(String, Problem)> = c
            .errors
            .iter()
            .map(|e| (e.full_path(), e.problem.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "count".to_string(),
                    Problem::Invalid {
                        found: "integer 70000".into(),
                        expected: "an integer in 0..=65535".into()
                    }
                ),
                (
                    "items[1].colour".to_string(),
                    Problem::UnknownKey {
                        key: "colour".into(),
                        allowed: &["id", "unit", "tags"]
                    }
                ),
                (
                    "items[1].unit".to_string(),
                    Problem::Invalid {
                        found: "string \"ten\"".into(),
                        expected: "an integer".into()
                    }
                ),
                ("items[2].id".to_string(), Problem::Missing { key: "id" }),
                (
                    "items[3].tags[1]".to_string(),
                    Problem::Invalid {
                        found: "integer 5".into(),
                        expected: "a string".into()
                    }
                ),
            ]
        );
        // `count` was required and is dead: no value for the root.
        assert!(c.value.is_none());
    }

    #[test]
    fn a_value_survives_with_bad_elements_left_out() {
        let c =
            collect("count = 2\n[[items]]\nid = \"a\"\nunit = 1\n[[items]]\nid = 5\nunit = 2\n");
        let v = c.value.unwrap();
        assert_eq!(v.items.len(), 1);
        assert_eq!(v.items[0].id, "a");
        assert!(c.dead.contains("items[1].id"));
        assert!(c.dead.contains("items[1]"));
        assert_eq!(c.errors.len(), 1);
    }
}
