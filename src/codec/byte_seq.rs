//! Sequences of bytes (`Vec<u8>` and friends) decoded in bulk.
//!
//! serde decodes a `Vec<u8>` one element at a time, and through postcard each element re-reads
//! the input position from memory (the byte just stored might have changed it, as far as the
//! compiler knows): a few nanoseconds per byte. In postcard's format a sequence of bytes is
//! exactly a byte string (a varint length, then the bytes), so when the value being decoded is a
//! `Vec<u8>`, the decoder reads it as a byte string. When the visitor is serde's own one for
//! `Vec<u8>` (which collects every element, nothing else), the bytes are copied into the vector
//! at once; any other visitor (a `deserialize_with` function, say) is handed the bytes one `u8`
//! at a time from a local slice iterator, which the compiler keeps in registers.

use std::any::type_name;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// Whether `T` is `u8` or `&u8`. (`type_name` needs no `'static` bound, unlike `TypeId`; the
/// names of primitive types cannot clash with a path.)
pub(crate) fn is_byte<T: ?Sized>() -> bool {
    let name = type_name::<T>();
    name == type_name::<u8>() || name == type_name::<&u8>()
}

/// Whether a visitor producing `T` reads a sequence of bytes.
pub(crate) fn is_byte_vec<T: ?Sized>() -> bool {
    type_name::<T>() == type_name::<Vec<u8>>()
}

/// Whether `V` is the visitor serde's `Deserialize` impl of `Vec<u8>` uses. Its type is private
/// to serde, so its name is asked of that impl, each time: [`SeqVisitorName`] hands it back
/// without allocating. (Not kept in a `OnceLock`: a child forked while another thread filled
/// one would wait for it for ever, as `sys::found_once` explains.)
fn is_serde_vec_visitor<V>() -> bool {
    matches!(Vec::<u8>::deserialize(SeqVisitorName), Err(VisitorName(name)) if name == type_name::<V>())
}

/// A deserializer that decodes nothing: its error names the visitor a sequence would be decoded
/// with.
struct SeqVisitorName;

/// The error of [`SeqVisitorName`]: the name of the visitor it was handed (empty for any other
/// request).
#[derive(Debug)]
struct VisitorName(&'static str);

impl fmt::Display for VisitorName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0)
    }
}

impl std::error::Error for VisitorName {}

impl de::Error for VisitorName {
    fn custom<T: fmt::Display>(_message: T) -> Self {
        VisitorName("")
    }
}

impl<'de> Deserializer<'de> for SeqVisitorName {
    type Error = VisitorName;

    fn deserialize_seq<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(VisitorName(type_name::<V>()))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(VisitorName(""))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct tuple tuple_struct map struct enum identifier ignored_any
    }
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
        if is_serde_vec_visitor::<V>() {
            // The cast succeeds exactly when `V::Value` is `Vec<u8>`.
            let mut value: Option<V::Value> = None;
            if let Ok(slot) = castaway::cast!(&mut value, &mut Option<Vec<u8>>) {
                *slot = Some(bytes.to_vec());
            }
            if let Some(value) = value {
                return Ok(value);
            }
        }
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
    use std::cell::Cell;
    use std::fmt;

    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::{Deserialize, Serialize};

    use super::{is_byte, is_byte_vec, is_serde_vec_visitor};
    use crate::codec::depth::Limited;

    #[test]
    fn only_bytes_are_bytes() {
        assert!(is_byte::<u8>() && is_byte::<&u8>());
        assert!(!is_byte::<i8>() && !is_byte::<&&u8>() && !is_byte::<bool>());
        assert!(is_byte_vec::<Vec<u8>>());
        assert!(!is_byte_vec::<Vec<i8>>() && !is_byte_vec::<Vec<Vec<u8>>>() && !is_byte_vec::<String>());
    }

    /// Answers, for the visitor a value is decoded with, whether it is serde's `Vec<u8>` visitor.
    struct Recorder<'a>(&'a Cell<Option<bool>>);

    impl<'de> Deserializer<'de> for Recorder<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            self.0.set(Some(is_serde_vec_visitor::<V>()));
            Err(de::Error::custom("recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
        }
    }

    fn decoded_by_serde_vec_visitor<T: for<'de> Deserialize<'de>>() -> bool {
        let seen = Cell::new(None);
        let _ = T::deserialize(Recorder(&seen));
        seen.get().expect("the value asked for a visitor")
    }

    #[test]
    fn only_serdes_own_vec_of_bytes_visitor_is_taken_for_it() {
        assert!(decoded_by_serde_vec_visitor::<Vec<u8>>());
        assert!(!decoded_by_serde_vec_visitor::<Vec<i8>>());
        assert!(!decoded_by_serde_vec_visitor::<Vec<u16>>());
        assert!(!decoded_by_serde_vec_visitor::<EvenBytes>());
    }

    /// A `Vec<u8>` decoded by a visitor of its own, which keeps only the even bytes.
    #[derive(Debug, PartialEq, Serialize)]
    struct EvenBytes(Vec<u8>);

    impl<'de> Deserialize<'de> for EvenBytes {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Even;
            impl<'de> Visitor<'de> for Even {
                type Value = Vec<u8>;
                fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                    formatter.write_str("bytes")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                    let mut even = Vec::new();
                    while let Some(byte) = seq.next_element::<u8>()? {
                        if byte % 2 == 0 {
                            even.push(byte);
                        }
                    }
                    Ok(even)
                }
            }
            deserializer.deserialize_seq(Even).map(EvenBytes)
        }
    }

    #[test]
    fn byte_vectors_decode_whole_and_other_visitors_still_see_every_byte() {
        let bytes: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let wire = postcard::to_stdvec(&(bytes.clone(), EvenBytes(bytes.clone()), vec![-1i8, 2])).unwrap();
        let mut deserializer = postcard::Deserializer::from_bytes(&wire);
        let decoded: (Vec<u8>, EvenBytes, Vec<i8>) =
            Deserialize::deserialize(Limited { inner: &mut deserializer, depth: 8 }).unwrap();
        let even: Vec<u8> = bytes.iter().copied().filter(|byte| byte % 2 == 0).collect();
        assert_eq!(decoded, (bytes, EvenBytes(even), vec![-1, 2]));
    }
}
