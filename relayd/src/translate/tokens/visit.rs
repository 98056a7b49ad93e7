//! The reference token estimate: a serde visitor that walks the body once and only adds numbers.
//! It defines the rules the byte scan in [`super::scan`] must match, and words the error for an
//! invalid body.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Key, PER_OBJECT, string_tokens};

/// The three values that cost tokens, each counted by the visitor.
#[derive(Deserialize)]
pub(super) struct CountedBody {
    pub(super) system: Option<Count>,
    pub(super) messages: Option<Vec<Count>>,
    pub(super) tools: Option<Vec<Count>>,
}

/// The token estimate of any JSON value.
pub(super) struct Count(pub(super) u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(CountVisitor { image_data: false })
            .map(Count)
    }
}

/// The value under a `data` key: base64 image data when it looks like it.
struct DataCount(u64);

impl<'de> Deserialize<'de> for DataCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(CountVisitor { image_data: true })
            .map(DataCount)
    }
}

/// Adds up the estimate of one JSON value as serde reads it.
struct CountVisitor {
    image_data: bool,
}

impl<'de> Visitor<'de> for CountVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        Ok(string_tokens(v, self.image_data))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut total = 0;
        while let Some(Count(n)) = seq.next_element()? {
            total += n;
        }
        Ok(total)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut total = PER_OBJECT;
        while let Some(key) = map.next_key::<Key>()? {
            total += match key {
                Key::Data => map.next_value::<DataCount>()?.0,
                // Block types and the like are structure, not prompt text.
                Key::Type | Key::CacheControl => {
                    map.next_value::<de::IgnoredAny>()?;
                    0
                }
                Key::Other(n) => n + map.next_value::<Count>()?.0,
            };
        }
        Ok(total)
    }
}
