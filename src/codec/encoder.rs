//! The serializer messages are encoded with: postcard's wire format, produced by postcard's own
//! serializer, except that a sequence of `u8` (`Vec<u8>`, `[u8]`, `VecDeque<u8>`) is copied in
//! bulk.
//!
//! serde hands such a sequence over one element at a time, and postcard then spends a few
//! nanoseconds on each byte (its output length goes through memory on every push), which was
//! most of the time of a typed 64 KiB message. The bytes on the wire are the same either way
//! (a varint length, then one byte per element), so the receiver decodes them with postcard.
//! [`Bulk`] wraps postcard's serializer at every level of the value, so nested sequences take
//! the fast path too.

use crate::codec::byte_seq::is_byte;
use postcard::ser_flavors::Flavor;
use postcard::{Error, Serializer as Postcard};
use serde::ser::{
    Impossible, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

/// Encodes `value` into `output` in postcard's format (see the module documentation).
pub(crate) fn to_flavor<T: Serialize + ?Sized, F: Flavor>(value: &T, output: F) -> Result<F::Output, Error> {
    let mut postcard = Postcard { output };
    value.serialize(Bulk(&mut postcard))?;
    postcard.output.finalize()
}

/// postcard's serializer, with sequences of bytes written in bulk.
struct Bulk<'a, F: Flavor>(&'a mut Postcard<F>);

impl<F: Flavor> Bulk<'_, F> {
    fn again(&mut self) -> Bulk<'_, F> {
        Bulk(&mut *self.0)
    }
}

/// Forwards scalar `serialize_*` methods to postcard.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        #[inline]
        fn $method(self, $($arg: $ty),*) -> Result<(), Error> {
            self.0.$method($($arg),*)
        }
    )*};
}

impl<'a, F: Flavor> Serializer for Bulk<'a, F> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    forward! {
        serialize_bool(v: bool), serialize_i8(v: i8), serialize_i16(v: i16), serialize_i32(v: i32),
        serialize_i64(v: i64), serialize_i128(v: i128), serialize_u8(v: u8), serialize_u16(v: u16),
        serialize_u32(v: u32), serialize_u64(v: u64), serialize_u128(v: u128), serialize_f32(v: f32),
        serialize_f64(v: f64), serialize_char(v: char), serialize_str(v: &str), serialize_bytes(v: &[u8]),
        serialize_none(), serialize_unit(), serialize_unit_struct(name: &'static str),
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str),
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        self.0.serialize_u8(1)?;
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.0.serialize_unit_variant(name, index, variant)?;
        value.serialize(self)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
        self.0.serialize_seq(len)?;
        Ok(self)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, Error> {
        self.0.serialize_unit_variant(name, index, variant)?;
        Ok(self)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self, Error> {
        self.0.serialize_map(len)?;
        Ok(self)
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Error> {
        // The same bytes as a tuple variant: the variant's index, then the fields back to back.
        self.serialize_tuple_variant(name, index, variant, len)
    }

    fn collect_seq<I>(self, iter: I) -> Result<(), Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lower, Some(upper)) if lower == upper => Some(lower),
            _ => None,
        };
        let mut seq = self.serialize_seq(len)?;
        if !is_byte::<I::Item>() {
            for item in iter {
                SerializeSeq::serialize_element(&mut seq, &item)?;
            }
            return Ok(());
        }
        // Zeroing a larger chunk showed up in the profile of 64-byte messages.
        let mut chunk = [0u8; 256];
        let mut iter = iter.peekable();
        while iter.peek().is_some() {
            let mut filled = 0;
            // A fixed-size chunk filled by a zip, which the compiler turns into plain copies.
            for (slot, item) in chunk.iter_mut().zip(iter.by_ref()) {
                *slot = item.serialize(ByteValue)?;
                filled += 1;
            }
            seq.0.output.try_extend(&chunk[..filled])?;
        }
        Ok(())
    }

    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> Result<(), Error> {
        self.0.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

impl<F: Flavor> SerializeSeq for Bulk<'_, F> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(self.again())
    }

    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// Implements the compound traits whose parts postcard writes back to back, with nothing
/// before, between or after them.
macro_rules! back_to_back {
    ($($trait:ident::$method:ident($($key:ident: $key_ty:ty),*)),* $(,)?) => {$(
        impl<F: Flavor> $trait for Bulk<'_, F> {
            type Ok = ();
            type Error = Error;

            fn $method<T: ?Sized + Serialize>(&mut self, $(_: $key_ty,)* value: &T) -> Result<(), Error> {
                value.serialize(self.again())
            }

            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
    )*};
}

back_to_back! {
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(key: &'static str),
    SerializeStructVariant::serialize_field(key: &'static str),
}

impl<F: Flavor> SerializeMap for Bulk<'_, F> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        key.serialize(self.again())
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(self.again())
    }

    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// A serializer that accepts exactly one `u8` and returns it: how the bulk path reads the
/// elements of a byte sequence without knowing their type at compile time.
struct ByteValue;

/// Refuses every `serialize_*` method but `serialize_u8`.
macro_rules! refuse {
    ($($method:ident($($ty:ty),*)),* $(,)?) => {$(
        fn $method(self, $(_: $ty),*) -> Result<u8, Error> {
            Err(Error::WontImplement)
        }
    )*};
}

impl Serializer for ByteValue {
    type Ok = u8;
    type Error = Error;
    type SerializeSeq = Impossible<u8, Error>;
    type SerializeTuple = Impossible<u8, Error>;
    type SerializeTupleStruct = Impossible<u8, Error>;
    type SerializeTupleVariant = Impossible<u8, Error>;
    type SerializeMap = Impossible<u8, Error>;
    type SerializeStruct = Impossible<u8, Error>;
    type SerializeStructVariant = Impossible<u8, Error>;

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<u8, Error> {
        Ok(v)
    }

    refuse! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64),
        serialize_i128(i128), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64), serialize_u128(u128),
        serialize_f32(f32), serialize_f64(f64), serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]),
        serialize_none(), serialize_unit(), serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<u8, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<u8, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(Error::WontImplement)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(Error::WontImplement)
    }

    fn collect_str<T: ?Sized + std::fmt::Display>(self, _: &T) -> Result<u8, Error> {
        Err(Error::WontImplement)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use postcard::ser_flavors::StdVec;
    use serde::Serialize;

    use super::to_flavor;

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(Vec<u8>),
        Tuple(u8, Vec<u16>),
        Struct { bytes: VecDeque<u8>, nested: Vec<Vec<u8>>, text: String },
    }

    #[derive(Serialize)]
    struct Everything<'a> {
        shapes: Vec<Shape>,
        slice: &'a [u8],
        array: [u8; 3],
        map: BTreeMap<u8, Option<Vec<u8>>>,
        wide: (i128, u128, f32, f64, char, bool, ()),
        big: Vec<u8>,
        signed: Vec<i8>,
    }

    /// Every kind of value encodes to exactly the bytes postcard itself produces.
    #[test]
    fn the_encoding_is_postcards() {
        let mut map = BTreeMap::new();
        map.insert(1, Some(vec![1, 2, 3]));
        map.insert(2, None);
        let value = Everything {
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(vec![]),
                Shape::Newtype(vec![3; 512]),
                Shape::Tuple(7, vec![300, 1]),
                Shape::Struct { bytes: (0..=255).collect(), nested: vec![vec![9; 5000], vec![]], text: "ünï".into() },
            ],
            slice: b"slice",
            array: [1, 2, 3],
            map,
            wide: (-1 << 100, 1 << 100, 1.5, -2.25, 'é', true, ()),
            big: (0..10_000u32).map(|i| i as u8).collect(),
            signed: vec![-1, 0, 1],
        };
        let ours = to_flavor(&value, StdVec::new()).unwrap();
        assert_eq!(ours, postcard::to_stdvec(&value).unwrap());
    }

    #[test]
    fn a_sequence_of_unknown_length_is_refused_like_postcard_refuses_it() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq((0..10u8).filter(|byte| byte % 2 == 0))
            }
        }
        assert!(to_flavor(&Unsized, StdVec::new()).is_err());
        assert!(postcard::to_stdvec(&Unsized).is_err());
    }
}
