//! Shared memory that travels by reference.

use std::fmt;
use std::io;
use std::ops::Deref;

use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::handles;
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
    /// This handle's own copy, once [`deref_mut`](IpcSharedMemory::deref_mut) was called: the
    /// shared region itself is sealed and never changes.
    private: Option<Box<[u8]>>,
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
        Ok(IpcSharedMemory::from(OsIpcSharedMemory::from_bytes(bytes)?))
    }

    /// Like [`from_byte`](Self::from_byte), returning the operating system's error.
    ///
    /// ```
    /// assert_eq!(crossproc::ipc::IpcSharedMemory::try_from_byte(1, 2).unwrap().len(), 2);
    /// ```
    pub fn try_from_byte(byte: u8, length: usize) -> io::Result<IpcSharedMemory> {
        Ok(IpcSharedMemory::from(OsIpcSharedMemory::from_byte(byte, length)?))
    }

    /// The contents as an owned vector (a copy). Always `Some`; the `Option` is kept for
    /// `ipc-channel` compatibility.
    ///
    /// ```
    /// let region = crossproc::ipc::IpcSharedMemory::from_bytes(b"xy");
    /// assert_eq!(region.take(), Some(b"xy".to_vec()));
    /// ```
    pub fn take(self) -> Option<Vec<u8>> {
        Some(match self.private {
            Some(private) => private.into_vec(),
            None => self.os.to_vec(),
        })
    }

    /// A mutable view of the contents, as `ipc-channel` has it — but a private copy-on-write
    /// view: the first call copies the contents into memory of this handle's own, and later
    /// reads and sends of *this* handle see the changes, while the shared region (and every
    /// clone, and every process that received it) keeps the bytes it had. Sending a changed
    /// handle sends a new region with the changed bytes. The region itself stays sealed, so no
    /// receiver can see bytes change under it.
    ///
    /// # Safety
    /// Nothing is required of the caller: the function is `unsafe` only to keep `ipc-channel`'s
    /// signature, whose version writes to memory other processes may be reading.
    ///
    /// ```
    /// let mut region = crossproc::ipc::IpcSharedMemory::from_byte(0, 4);
    /// let copy = region.clone();
    /// // SAFETY: crossproc's deref_mut has no precondition.
    /// unsafe { region.deref_mut()[0] = 9 };
    /// assert_eq!(&*region, [9, 0, 0, 0]);
    /// assert_eq!(&*copy, [0, 0, 0, 0]);
    /// ```
    #[allow(unsafe_code)] // an `unsafe fn` signature for compatibility; no unsafe operation inside
    pub unsafe fn deref_mut(&mut self) -> &mut [u8] {
        self.private_mut()
    }

    /// This handle's private copy of the contents, made on first use.
    pub(crate) fn private_mut(&mut self) -> &mut [u8] {
        let os = &self.os;
        self.private.get_or_insert_with(|| Box::from(&os[..]))
    }
}

impl IpcSharedMemory {
    /// The region to send: the shared one, or a new one holding this handle's private copy.
    pub(crate) fn to_os(&self) -> io::Result<OsIpcSharedMemory> {
        match &self.private {
            Some(private) => OsIpcSharedMemory::from_bytes(private),
            None => Ok(self.os.clone()),
        }
    }
}

impl From<OsIpcSharedMemory> for IpcSharedMemory {
    fn from(os: OsIpcSharedMemory) -> Self {
        IpcSharedMemory { os, private: None }
    }
}

impl Deref for IpcSharedMemory {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.private.as_deref().unwrap_or(&self.os)
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
        let region = self.to_os().map_err(ser::Error::custom)?;
        let index = handles::push_shared_memory(region).map_err(ser::Error::custom)?;
        serializer.serialize_u32(index)
    }
}

impl<'de> Deserialize<'de> for IpcSharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)?;
        Ok(IpcSharedMemory::from(handles::take_shared_memory(index).map_err(de::Error::custom)?))
    }
}
