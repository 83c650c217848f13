//! Sequences of bytes (`Vec<u8>` and friends) decoded in bulk.
//!
//! serde decodes a `Vec<u8>` one element at a time, and through postcard each element re-reads
//! the input position from memory (the byte just stored might have changed it, as far as the
//! compiler knows): a few nanoseconds per byte. In postcard's format a sequence of bytes is
//! exactly a byte string (a varint length, then the bytes), so when the value being decoded is a
//! `Vec<u8>`, the decoder reads it as a byte string and hands the visitor the bytes from a
//! local slice iterator, which the compiler keeps in registers.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// Whether `T` is `u8` or `&u8`. (`type_name` needs no `'static` bound, unlike `TypeId`; the
/// names of primitive types cannot clash with a path.)
pub(crate) fn is_byte<T: ?Sized>() -> bool {
    let name = std::any::type_name::<T>();
    name == std::any::type_name::<u8>() || name == std::any::type_name::<&u8>()
}

/// Whether a visitor producing `T` reads a sequence of bytes.
pub(crate) fn is_byte_vec<T: ?Sized>() -> bool {
    std::any::type_name::<T>() == std::any::type_name::<Vec<u8>>()
}

/// A visitor of a byte string that passes it on to `V` as a sequence of `u8`.
pub(crate) struct BytesAsSeq<V>(pub V);

impl<'de, V: Visitor<'de>> Visitor<'de> for BytesAsSeq<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(formatter)
    }

    fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<V::Value, E> {
        self.visit_bytes(bytes)
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<V::Value, E> {
        self.0.visit_seq(ByteSeq { bytes: bytes.iter(), error: std::marker::PhantomData })
    }
}

/// The elements of a byte string, one `u8` at a time.
struct ByteSeq<'a, E> {
    bytes: std::slice::Iter<'a, u8>,
    error: std::marker::PhantomData<E>,
}

impl<'de, E: de::Error> SeqAccess<'de> for ByteSeq<'_, E> {
    type Error = E;

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, E> {
        match self.bytes.next() {
            Some(&byte) => seed.deserialize(Byte(byte, self.error)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len())
    }
}

/// One element: a `u8`, and nothing else.
struct Byte<E>(u8, std::marker::PhantomData<E>);

impl<'de, E: de::Error> Deserializer<'de> for Byte<E> {
    type Error = E;

    #[inline]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        visitor.visit_u8(self.0)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, E> {
        Err(E::custom("a Vec<u8> whose elements are not decoded as u8"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::{is_byte, is_byte_vec};

    #[test]
    fn only_bytes_are_bytes() {
        assert!(is_byte::<u8>() && is_byte::<&u8>());
        assert!(!is_byte::<i8>() && !is_byte::<&&u8>() && !is_byte::<bool>());
        assert!(is_byte_vec::<Vec<u8>>());
        assert!(!is_byte_vec::<Vec<i8>>() && !is_byte_vec::<Vec<Vec<u8>>>() && !is_byte_vec::<String>());
    }
}
