//! Shared memory that travels by reference.

use std::fmt;
use std::io;
use std::ops::Deref;

use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

use crate::handles;
use crate::sys::OsIpcSharedMemory;

/// An immutable region of memory shared between processes. Sending it maps the same pages in
/// the receiver: the contents are never copied, whatever their size.
///
/// On Linux the region is a memfd sealed against writes, growth and shrinking, so a receiver can
/// rely on its contents for as long as it holds it.
///
/// ```
/// use crossproc::ipc::{self, IpcSharedMemory};
/// let (tx, rx) = ipc::channel::<IpcSharedMemory>().unwrap();
/// tx.send(IpcSharedMemory::from_byte(7, 1 << 20)).unwrap();
/// let region = rx.recv().unwrap();
/// assert_eq!(region.len(), 1 << 20);
/// assert!(region.iter().all(|&b| b == 7));
/// ```
#[derive(Clone)]
pub struct IpcSharedMemory {
    os: OsIpcSharedMemory,
}

impl IpcSharedMemory {
    /// A new region holding a copy of `bytes`.
    ///
    /// # Panics
    /// When the operating system cannot create the region (out of memory or descriptors);
    /// [`try_from_bytes`](Self::try_from_bytes) returns that error instead.
    ///
    /// ```
    /// let region = crossproc::ipc::IpcSharedMemory::from_bytes(b"abc");
    /// assert_eq!(&*region, b"abc");
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> IpcSharedMemory {
        Self::try_from_bytes(bytes).expect("cannot create shared memory")
    }

    /// A new region of `length` bytes, each equal to `byte`.
    ///
    /// # Panics
    /// When the operating system cannot create the region; [`try_from_byte`](Self::try_from_byte)
    /// returns that error instead.
    ///
    /// ```
    /// let region = crossproc::ipc::IpcSharedMemory::from_byte(0xFF, 3);
    /// assert_eq!(&*region, [0xFF; 3]);
    /// ```
    pub fn from_byte(byte: u8, length: usize) -> IpcSharedMemory {
        Self::try_from_byte(byte, length).expect("cannot create shared memory")
    }

    /// Like [`from_bytes`](Self::from_bytes), returning the operating system's error.
    ///
    /// ```
    /// assert!(crossproc::ipc::IpcSharedMemory::try_from_bytes(b"ok").is_ok());
    /// ```
    pub fn try_from_bytes(bytes: &[u8]) -> io::Result<IpcSharedMemory> {
        Ok(IpcSharedMemory { os: OsIpcSharedMemory::from_bytes(bytes)? })
    }

    /// Like [`from_byte`](Self::from_byte), returning the operating system's error.
    ///
    /// ```
    /// assert_eq!(crossproc::ipc::IpcSharedMemory::try_from_byte(1, 2).unwrap().len(), 2);
    /// ```
    pub fn try_from_byte(byte: u8, length: usize) -> io::Result<IpcSharedMemory> {
        Ok(IpcSharedMemory { os: OsIpcSharedMemory::from_byte(byte, length)? })
    }

    /// The contents as an owned vector (a copy). Always `Some`; the `Option` is kept for
    /// `ipc-channel` compatibility.
    ///
    /// ```
    /// let region = crossproc::ipc::IpcSharedMemory::from_bytes(b"xy");
    /// assert_eq!(region.take(), Some(b"xy".to_vec()));
    /// ```
    pub fn take(self) -> Option<Vec<u8>> {
        Some(self.os.to_vec())
    }
}

impl Deref for IpcSharedMemory {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.os
    }
}

impl PartialEq for IpcSharedMemory {
    fn eq(&self, other: &IpcSharedMemory) -> bool {
        **self == **other
    }
}

impl fmt::Debug for IpcSharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpcSharedMemory({} bytes)", self.len())
    }
}

impl Serialize for IpcSharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = handles::push_shared_memory(self.os.clone()).map_err(ser::Error::custom)?;
        serializer.serialize_u32(index)
    }
}

impl<'de> Deserialize<'de> for IpcSharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)?;
        Ok(IpcSharedMemory { os: handles::take_shared_memory(index).map_err(de::Error::custom)? })
    }
}
