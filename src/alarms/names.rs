//! Serde by name for the contract enums that carry no serde derives (`ConditionClass`, `Impact`,
//! `Urgency`), so alarm state can be snapshot without touching their owners' files.
//!
//! Each enum is written as its variant name (its `Debug` form) and read back by looking the
//! name up in a list of known variants: a snapshot holding an unknown name is an error, never a
//! guess.

use std::fmt::Debug;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

use crate::config::model::{Impact, Urgency};
use crate::rules::condition::ConditionClass;

/// Every condition class a snapshot may name.
pub(crate) const CLASSES: &[ConditionClass] = &ConditionClass::ALL;

const IMPACTS: &[Impact] = &[Impact::High, Impact::Medium, Impact::Low];
const URGENCIES: &[Urgency] = &[Urgency::High, Urgency::Medium, Urgency::Low];

fn name_of<T: Debug>(value: &T) -> String {
    format!("{value:?}")
}

fn by_name<'de, D: Deserializer<'de>, T: Debug + Copy>(
    known: &[T],
    what: &str,
    d: D,
) -> Result<T, D::Error> {
    let name = String::deserialize(d)?;
    known
        .iter()
        .copied()
        .find(|v| name_of(v) == name)
        .ok_or_else(|| D::Error::custom(format!("unknown {what} {name:?}")))
}

/// `#[serde(with = "class")]` for a [`ConditionClass`].
pub(crate) mod class {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &ConditionClass, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&name_of(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConditionClass, D::Error> {
        by_name(CLASSES, "condition class", d)
    }
}

/// `#[serde(with = "classes")]` for a `Vec<ConditionClass>`.
pub(crate) mod classes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[ConditionClass], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(name_of))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ConditionClass>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .into_iter()
            .map(|name| {
                CLASSES
                    .iter()
                    .copied()
                    .find(|v| name_of(v) == name)
                    .ok_or_else(|| D::Error::custom(format!("unknown condition class {name:?}")))
            })
            .collect()
    }
}

/// `#[serde(with = "impact")]` for an [`Impact`].
pub(crate) mod impact {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Impact, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&name_of(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Impact, D::Error> {
        by_name(IMPACTS, "impact", d)
    }
}

/// `#[serde(with = "urgency")]` for an [`Urgency`].
pub(crate) mod urgency {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Urgency, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&name_of(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Urgency, D::Error> {
        by_name(URGENCIES, "urgency", d)
    }
}

/// `#[serde(with = "map_as_pairs")]` for a `BTreeMap` whose keys are not strings (JSON object
/// keys must be): written as a list of `[key, value]` pairs.
pub(crate) mod map_as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S, K, V>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        s.collect_seq(map.iter())
    }

    pub(crate) fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        let pairs = Vec::<(K, V)>::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}
