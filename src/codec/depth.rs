//! A serde deserializer wrapper that bounds how deeply a decoded value nests.
//!
//! serde's derived impls recurse once per level of nesting, so a peer that sends a deeply
//! nested value of a recursive type (`enum Tree { Node(Vec<Tree>) }`) could overflow the
//! receiving thread's stack — an abort, not an error. Every container (sequence, map, enum
//! variant, `Some`, newtype) decoded through [`Limited`] costs one level; past the limit the
//! decode fails with an error. Scalars pass straight through, so the wrapper costs nothing
//! measurable once inlined.

use std::fmt;

use crate::codec::byte_seq::{is_byte_vec, BytesAsSeq};
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// A deserializer that may go `depth` more levels deep.
pub(crate) struct Limited<D> {
    pub inner: D,
    pub depth: usize,
}

fn deeper<E: de::Error>(depth: usize) -> Result<usize, E> {
    depth.checked_sub(1).ok_or_else(|| E::custom("message nests deeper than the receive limit allows"))
}

/// Forwards `deserialize_*` methods, wrapping the visitor.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            self.inner.$method($($arg,)* Visit { inner: visitor, depth: self.depth })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
    type Error = D::Error;

    forward! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(), deserialize_i32(),
        deserialize_i64(), deserialize_i128(), deserialize_u8(), deserialize_u16(), deserialize_u32(),
        deserialize_u64(), deserialize_u128(), deserialize_f32(), deserialize_f64(), deserialize_char(),
        deserialize_str(), deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize), deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }

    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if is_byte_vec::<V::Value>() {
            // Same bytes on the wire; one level deep, like any sequence (see `byte_seq`).
            deeper::<Self::Error>(self.depth)?;
            return self.inner.deserialize_bytes(BytesAsSeq(visitor));
        }
        self.inner.deserialize_seq(Visit { inner: visitor, depth: self.depth })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor whose nested parts are decoded through [`Limited`].
struct Visit<V> {
    inner: V,
    depth: usize,
}

/// Forwards `visit_*` methods for scalars.
macro_rules! forward_scalar {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        #[inline]
        fn $method<E: de::Error>(self, value: $ty) -> Result<Self::Value, E> {
            self.inner.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    forward_scalar! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64), visit_i128(i128),
        visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64), visit_u128(u128), visit_f32(f32),
        visit_f64(f64), visit_char(char), visit_str(&str), visit_borrowed_str(&'de str), visit_string(String),
        visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_some(Limited { inner: deserializer, depth })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_newtype_struct(Limited { inner: deserializer, depth })
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_seq(Nested { inner: seq, depth })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_map(Nested { inner: map, depth })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let depth = deeper(self.depth)?;
        self.inner.visit_enum(Nested { inner: data, depth })
    }
}

/// A seed, or a sequence, map, enum or variant access, whose values decode through [`Limited`].
struct Nested<T> {
    inner: T,
    depth: usize,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nested<S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.deserialize(Limited { inner: deserializer, depth: self.depth })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Nested<A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, A::Error> {
        self.inner.next_element_seed(Nested { inner: seed, depth: self.depth })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Nested<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Nested { inner: seed, depth: self.depth })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(Nested { inner: seed, depth: self.depth })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Nested<A> {
    type Error = A::Error;
    type Variant = Nested<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, variant) = self.inner.variant_seed(Nested { inner: seed, depth })?;
        Ok((value, Nested { inner: variant, depth }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Nested<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.newtype_variant_seed(Nested { inner: seed, depth: self.depth })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(len, Visit { inner: visitor, depth: self.depth })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(fields, Visit { inner: visitor, depth: self.depth })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::Limited;

    #[derive(Debug, Deserialize)]
    enum Tree {
        Leaf,
        Node(Vec<Tree>),
    }

    fn decode(bytes: &[u8], depth: usize) -> postcard::Result<Tree> {
        let mut deserializer = postcard::Deserializer::from_bytes(bytes);
        Tree::deserialize(Limited { inner: &mut deserializer, depth })
    }

    /// `levels` nested nodes, then a leaf: [Node, len 1] * levels, [Leaf].
    fn nested(levels: usize) -> Vec<u8> {
        let mut bytes = [1u8, 1].repeat(levels);
        bytes.push(0);
        bytes
    }

    #[test]
    fn shallow_values_decode() {
        assert!(matches!(decode(&nested(10), 64).unwrap(), Tree::Node(children) if children.len() == 1));
        assert!(matches!(decode(&[0], 1).unwrap(), Tree::Leaf));
    }

    #[test]
    fn deep_values_are_an_error_not_a_stack_overflow() {
        assert!(decode(&nested(30), 64).is_ok()); // each level is an enum and a sequence: 60 deep
        assert!(decode(&nested(40), 64).is_err());
        assert!(decode(&nested(1_000_000), 64).is_err());
    }
}
