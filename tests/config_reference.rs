//! `docs/configuration.md` checked against the code: every key the raw configuration types
//! accept (`dcguard::config::raw`, walked through serde itself) is documented in the
//! reference's section for its file, and every key the reference's examples set exists.
//!
//! The walk is a serde `Deserializer` that answers each struct with all of its fields
//! (the names serde would accept, renames included), each option with `Some`, each list
//! with one element and each enum with its first variant. A key added to the raw types
//! therefore appears here without anyone listing it, and the failure names it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use dcguard::config::raw::{RawDaemonFile, RawProfileFile, RawSiteFile};
use serde::de::value::{Error, StrDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// Collected key paths, segments joined by `.`; list elements add no segment.
type Keys = RefCell<BTreeSet<String>>;

/// A deserializer that records every key path of the type it is asked to produce.
struct Tracer<'a> {
    path: String,
    keys: &'a Keys,
}

impl<'a> Tracer<'a> {
    fn child(&self, field: &str) -> Tracer<'a> {
        let path = if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        };
        self.keys.borrow_mut().insert(path.clone());
        Tracer {
            path,
            keys: self.keys,
        }
    }
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u8(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u16(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u32(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(1)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i8(1)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i16(1)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i32(1)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(1)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f32(1.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(1.0)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("")
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_string(String::new())
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(OneElement(Some(self)))
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // Free-form maps (enum value names) have no fixed keys to document.
        visitor.visit_map(Fields {
            tracer: self,
            fields: &[],
            next: 0,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            tracer: self,
            fields,
            next: 0,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(FirstVariant(variants[0]))
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct newtype_struct tuple tuple_struct
        identifier ignored_any
    }
}

/// A list of one element.
struct OneElement<'a>(Option<Tracer<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|t| seed.deserialize(t)).transpose()
    }
}

/// Every field of a struct, each traced under its name.
struct Fields<'a> {
    tracer: Tracer<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, Error> = field.into_deserializer();
        seed.deserialize(key).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.tracer.child(field))
    }
}

/// An enum answered with its first (unit) variant.
struct FirstVariant(&'static str);

impl<'de> EnumAccess<'de> for FirstVariant {
    type Error = Error;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let name: StrDeserializer<'_, Error> = self.0.into_deserializer();
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'de> VariantAccess<'de> for FirstVariant {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, Error> {
        Err(de::Error::custom("newtype variants are not traced"))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("tuple variants are not traced"))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(de::Error::custom("struct variants are not traced"))
    }
}

/// Every key path `T` accepts.
fn keys_of<T: de::DeserializeOwned>() -> BTreeSet<String> {
    let keys = Keys::default();
    T::deserialize(Tracer {
        path: String::new(),
        keys: &keys,
    })
    .unwrap_or_else(|e| panic!("tracing {}: {e}", std::any::type_name::<T>()));
    keys.into_inner()
}

/// The files of the configuration, the reference's heading for each, and its keys.
fn files() -> Vec<(&'static str, &'static str, BTreeSet<String>)> {
    vec![
        ("dcguard.toml", "`dcguard.toml`", keys_of::<RawDaemonFile>()),
        (
            "sites/<id>.toml",
            "`sites/<id>.toml`",
            keys_of::<RawSiteFile>(),
        ),
        (
            "profiles/<id>.toml",
            "`profiles/<id>.toml`",
            keys_of::<RawProfileFile>(),
        ),
    ]
}

fn reference() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The TOML code blocks of the `## ` sections whose heading contains `heading`, split
/// into blocks by table header (`[a.b]` and `[[a.b]]` both give `a.b`; text before the
/// first header is the block ""). Blocks of the same name are joined.
fn doc_blocks(doc: &str, heading: &str) -> BTreeMap<String, String> {
    let mut blocks: BTreeMap<String, String> = BTreeMap::new();
    let mut in_section = false;
    let mut in_code = false;
    let mut current = String::new();
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_section = title.contains(heading);
            in_code = false;
            current.clear();
            continue;
        }
        if !in_section {
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_code = !in_code && line.trim_start().starts_with("```toml");
            current.clear();
            continue;
        }
        if !in_code {
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !trimmed.starts_with("[{") {
            let name = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            current = name.to_owned();
        }
        let block = blocks.entry(current.clone()).or_default();
        block.push_str(line);
        block.push('\n');
    }
    blocks
}

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        boundary(before) && boundary(after)
    })
}

/// Whether `key` (a traced path) is documented in `blocks`: the block of its longest
/// documented table prefix mentions each remaining segment (as a key, in an inline
/// table or in a comment listing the optional keys).
fn documented(blocks: &BTreeMap<String, String>, key: &str) -> bool {
    // A table documented by its header or by the headers of its sub-tables.
    let prefix = format!("{key}.");
    if blocks.keys().any(|b| b == key || b.starts_with(&prefix)) {
        return true;
    }
    let segments: Vec<&str> = key.split('.').collect();
    for cut in (0..=segments.len()).rev() {
        let table = segments[..cut].join(".");
        if let Some(block) = blocks.get(&table) {
            return segments[cut..].iter().all(|s| has_word(block, s));
        }
    }
    false
}

/// Every key of the raw configuration types is in `docs/configuration.md`, in the
/// section of its file. The failure lists exactly the undocumented keys.
#[test]
fn every_configuration_key_is_documented() {
    let doc = reference();
    let mut missing = Vec::new();
    let mut total = 0;
    for (file, heading, keys) in files() {
        let blocks = doc_blocks(&doc, heading);
        assert!(
            !blocks.is_empty(),
            "docs/configuration.md has no TOML section for {heading}"
        );
        total += keys.len();
        for key in keys {
            if !documented(&blocks, &key) {
                missing.push(format!("{file}: {key}"));
            }
        }
    }
    assert!(total > 150, "only {total} keys traced; the walk is broken");
    assert!(
        missing.is_empty(),
        "{} configuration keys are not documented in docs/configuration.md (add each to the \
         example of its file's section):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

/// Every key the reference's examples set (a `key =` at the start of a line, outside
/// comments) exists in the raw types: the reference documents no removed or misspelt key.
#[test]
fn every_documented_key_exists() {
    let doc = reference();
    let mut unknown = Vec::new();
    for (file, heading, keys) in files() {
        let leaves: BTreeMap<String, BTreeSet<String>> =
            keys.iter().fold(BTreeMap::new(), |mut m, k| {
                let (table, leaf) = k.rsplit_once('.').unwrap_or(("", k));
                m.entry(table.to_owned())
                    .or_default()
                    .insert(leaf.to_owned());
                m
            });
        for (table, block) in doc_blocks(&doc, heading) {
            for line in block.lines() {
                let line = line.trim_start();
                let Some((key, _)) = line.split_once('=') else {
                    continue;
                };
                let key = key.trim();
                if line.starts_with('#')
                    || line.starts_with('[')
                    || key.is_empty()
                    || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    continue;
                }
                let known = leaves.get(&table).is_some_and(|l| l.contains(key))
                    // keys of an inline table written as its own line (matrix rows, targets)
                    || keys.contains(&format!("{table}.{key}"))
                    || keys.iter().any(|k| k.starts_with(&format!("{table}.{key}.")))
                    // a free-form map (rule name -> priority): a table without fixed keys
                    || (keys.contains(&table)
                        && !keys.iter().any(|k| k.starts_with(&format!("{table}."))));
                if !known {
                    unknown.push(format!("{file}: [{table}] {key}"));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "docs/configuration.md sets keys the code does not accept:\n{}",
        unknown.join("\n")
    );
}

/// The walk and the matcher themselves: known keys are found where they are, and a key
/// that is not in the reference is reported.
#[test]
fn the_reference_check_finds_keys_and_reports_missing_ones() {
    let daemon = keys_of::<RawDaemonFile>();
    for key in [
        "daemon.data_dir",
        "priority.targets.P1.target_hours",
        "mqtt_brokers.password_file",
        "ticketing.dispatch.retry_horizon_h",
    ] {
        assert!(daemon.contains(key), "{key} not traced: {daemon:?}");
    }
    let profile = keys_of::<RawProfileFile>();
    assert!(profile.contains("points.type") && profile.contains("points.enum"));
    assert!(profile.contains("modbus.never_read.count"));

    let doc = "## `x.toml`\n\n```toml\n[a]\nkey = 1 # or other_key\nt = { inner = 2 }\n[[b.c]]\nd = 3\n```\n";
    let blocks = doc_blocks(doc, "`x.toml`");
    assert!(documented(&blocks, "a.key"));
    assert!(documented(&blocks, "a.other_key"));
    assert!(documented(&blocks, "a.t.inner"));
    assert!(documented(&blocks, "b.c.d"));
    assert!(!documented(&blocks, "a.missing"));
    assert!(!documented(&blocks, "b.c.missing"));
    assert!(!documented(&blocks, "z.key"));
}
