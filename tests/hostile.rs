//! A hostile peer speaks the wire protocol with raw sockets: every malformed packet is an error
//! on that receive, the descriptors it carried are closed, and the channel keeps working.
//!
//! The peer connects to a one-shot server's name with a raw `SOCK_SEQPACKET` socket, as any
//! local process could, and writes packets in the format documented in
//! `src/sys/unix/frame.rs`.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use crossproc::ipc::{IpcOneShotServer, IpcReceiver, IpcSender, IpcSharedMemory};
use crossproc::IpcError;
use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::net::{
    connect, sendmsg, socket_with, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use util::{assert_child_succeeds, child_command, child_role, open_fds};

/// Descriptor counts are per process: every test in this file that opens descriptors takes
/// this lock, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// "CXP3": the magic number and protocol version 3.
const MAGIC: u32 = 0x3350_5843;
/// Bit 0 once meant a sealed payload memfd; it is reserved now.
const RESERVED_FLAG: u32 = 1;
const HANDLES_ON_SIDE_SOCKET: u32 = 2;
const PAYLOAD_IN_POOLED_MEMFD: u32 = 4;
/// A place holder: no message, only a place in the order (see `ring/mod.rs`).
const PLACE_HOLDER: u32 = 8;

fn header(flags: u32, channels: u32, shared_memory: u32, payload_len: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&MAGIC.to_le_bytes());
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&channels.to_le_bytes());
    bytes.extend_from_slice(&shared_memory.to_le_bytes());
    bytes.extend_from_slice(&payload_len.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes()); // no ticket
    bytes.extend(std::iter::repeat_n(0u8, channels as usize)); // plain channel ends
    bytes
}

/// A well-formed packet carrying `value` and no descriptors.
fn valid_packet<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let payload = postcard::to_stdvec(value).unwrap();
    let mut packet = header(0, 0, 0, payload.len() as u64);
    packet.extend_from_slice(&payload);
    packet
}

fn send_raw(socket: &OwnedFd, packet: &[u8], fd_groups: &[&[BorrowedFd<'_>]]) {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(253)) * (fd_groups.len() + 1)];
    let mut control = SendAncillaryBuffer::new(&mut space);
    for group in fd_groups {
        assert!(control.push(SendAncillaryMessage::ScmRights(group)));
    }
    sendmsg(socket, &[IoSlice::new(packet)], &mut control, SendFlags::NOSIGNAL).unwrap();
}

/// A raw client connected to a server whose receiver we hold, after a valid first message.
fn hostile_client() -> (OwnedFd, IpcReceiver<String>) {
    let (server, name) = IpcOneShotServer::<String>::new().unwrap();
    let accepting = std::thread::spawn(move || server.accept().unwrap());
    let socket = socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
    connect(&socket, &SocketAddrUnix::new(name.as_str()).unwrap()).unwrap();
    send_raw(&socket, &valid_packet(&"hello".to_string()), &[]);
    let (receiver, first) = accepting.join().unwrap();
    assert_eq!(first, "hello");
    (socket, receiver)
}

fn sealed_memfd(len: u64) -> OwnedFd {
    let fd = memfd_create("test", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    ftruncate(&fd, len).unwrap();
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE).unwrap();
    fd
}

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

/// Sends `packet` with `fds`, expects an `InvalidData` error on the receiving side, then checks
/// that the channel still delivers a valid message and that no descriptor leaked.
fn expect_refused(packet: &[u8], make_fds: impl FnOnce() -> Vec<OwnedFd>) {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (socket, receiver) = hostile_client();
    let before = open_fds();
    {
        let fds = make_fds();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let groups: Vec<&[BorrowedFd<'_>]> = if borrowed.is_empty() { vec![] } else { vec![&borrowed] };
        send_raw(&socket, packet, &groups);
    }
    match receiver.recv() {
        Err(IpcError::Io(error)) => assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}"),
        other => panic!("expected InvalidData, got {other:?}"),
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
    send_raw(&socket, &valid_packet(&"still works".to_string()), &[]);
    assert_eq!(receiver.recv().unwrap(), "still works");
}

#[test]
fn a_packet_shorter_than_its_header() {
    expect_refused(&[1, 2, 3], Vec::new);
}

#[test]
fn a_packet_with_a_bad_magic_number() {
    let mut packet = valid_packet(&"x".to_string());
    packet[0] ^= 0xFF;
    expect_refused(&packet, Vec::new);
}

#[test]
fn a_payload_length_that_lies() {
    let mut packet = header(0, 0, 0, 1_000_000);
    packet.extend_from_slice(b"short");
    expect_refused(&packet, Vec::new);
}

#[test]
fn unknown_flags() {
    expect_refused(&header(0x100, 0, 0, 0), Vec::new);
}

/// A place holder that carries a payload, a channel or a descriptor is refused; an empty one is
/// no message at all: the receive goes on to the next.
#[test]
fn a_place_holder_carries_nothing() {
    let mut with_payload = header(PLACE_HOLDER, 0, 0, 1);
    with_payload.push(7);
    expect_refused(&with_payload, Vec::new);
    expect_refused(&header(PLACE_HOLDER | HANDLES_ON_SIDE_SOCKET, 0, 0, 0), Vec::new);
    expect_refused(&header(PLACE_HOLDER, 1, 0, 0), || vec![pipe().0]);
    expect_refused(&header(PLACE_HOLDER, 0, 0, 0), || vec![pipe().0]);

    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (socket, receiver) = hostile_client();
    send_raw(&socket, &header(PLACE_HOLDER, 0, 0, 0), &[]);
    send_raw(&socket, &valid_packet(&"after the place holder".to_string()), &[]);
    assert_eq!(receiver.recv().unwrap(), "after the place holder");
    assert!(matches!(receiver.try_recv(), Err(crossproc::TryRecvError::Empty)));
}

#[test]
fn fewer_descriptors_than_the_header_claims() {
    expect_refused(&header(0, 2, 1, 0), || vec![sealed_memfd(16)]);
}

#[test]
fn more_descriptors_than_the_header_claims() {
    expect_refused(&header(0, 0, 0, 0), || {
        let (a, b) = pipe();
        vec![a, b, sealed_memfd(4)]
    });
}

#[test]
fn a_pipe_where_a_channel_is_expected() {
    expect_refused(&header(0, 1, 0, 0), || vec![pipe().0]);
}

#[test]
fn a_stream_socket_where_a_channel_is_expected() {
    expect_refused(&header(0, 1, 0, 0), || {
        let (a, _b) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).unwrap();
        vec![a]
    });
}

#[test]
fn a_pipe_where_shared_memory_is_expected() {
    expect_refused(&header(0, 0, 1, 0), || vec![pipe().0]);
}

#[test]
fn shared_memory_without_seals() {
    expect_refused(&header(0, 0, 1, 0), || {
        let fd = memfd_create("unsealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        ftruncate(&fd, 4096).unwrap();
        vec![fd]
    });
}

#[test]
fn a_pooled_payload_that_is_a_pipe_or_unsealed_or_too_short_or_missing_or_flagged_reserved() {
    expect_refused(&header(PAYLOAD_IN_POOLED_MEMFD, 0, 0, 10), || vec![pipe().0]);
    // Without the shrink seal its sender could truncate it while the receiver copies it out.
    expect_refused(&header(PAYLOAD_IN_POOLED_MEMFD, 0, 0, 10), || {
        let fd = memfd_create("unsealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        ftruncate(&fd, 8192).unwrap();
        vec![fd]
    });
    expect_refused(&header(PAYLOAD_IN_POOLED_MEMFD, 0, 0, 1 << 20), || vec![sealed_memfd(8192)]);
    expect_refused(&header(PAYLOAD_IN_POOLED_MEMFD, 0, 0, 10), Vec::new);
    expect_refused(&header(PAYLOAD_IN_POOLED_MEMFD | RESERVED_FLAG, 0, 0, 10), || vec![sealed_memfd(8192)]);
}

#[test]
fn a_pooled_payload_is_copied_out_before_its_sender_can_change_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (socket, receiver) = hostile_client();
    // A memfd the hostile sender keeps writing to (sealed only against shrinking, as pooled
    // payloads must be): the payload starts at 4096.
    let memfd = memfd_create("hostile", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    let payload = postcard::to_stdvec(&"x".repeat(300_000)).unwrap();
    rustix::io::pwrite(&memfd, &payload, 4096).unwrap();
    fcntl_add_seals(&memfd, SealFlags::SHRINK).unwrap();
    send_raw(&socket, &header(PAYLOAD_IN_POOLED_MEMFD, 0, 0, payload.len() as u64), &[&[memfd.as_fd()]]);
    let received = receiver.recv().unwrap();
    rustix::io::pwrite(&memfd, b"changed", 4096).unwrap();
    assert_eq!(received, "x".repeat(300_000), "the receiver holds its own copy");
    let mut state = [0xFFu8; 4];
    rustix::io::pread(&memfd, &mut state, 0).unwrap();
    assert_eq!(state, [0; 4], "the receiver marked the memfd free for its sender");
}

#[test]
fn a_side_socket_with_fewer_descriptors_than_claimed() {
    expect_refused(&header(HANDLES_ON_SIDE_SOCKET, 300, 0, 0), || {
        let (tx, rx) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
        let (p, _q) = pipe();
        send_raw(&tx, &[0], &[&[p.as_fd()]]);
        vec![rx]
    });
}

#[test]
fn a_side_socket_that_is_never_written_does_not_hang() {
    expect_refused(&header(HANDLES_ON_SIDE_SOCKET, 300, 0, 0), || {
        let (_tx, rx) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
        vec![rx]
    });
}

#[test]
fn the_most_descriptors_a_packet_can_carry_in_two_control_messages() {
    // The kernel caps one packet at 253 descriptors (SCM_MAX_FD) across all its control
    // messages; our receive buffer takes that many, so a peer cannot truncate it.
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (socket, receiver) = hostile_client();
    let before = open_fds();
    {
        let memfds: Vec<OwnedFd> = (0..253).map(|_| sealed_memfd(1)).collect();
        let borrowed: Vec<BorrowedFd<'_>> = memfds.iter().map(AsFd::as_fd).collect();
        send_raw(&socket, &header(0, 0, 300, 0), &[&borrowed[..200], &borrowed[200..]]);
    }
    assert!(matches!(receiver.recv(), Err(IpcError::Io(error)) if error.kind() == std::io::ErrorKind::InvalidData));
    assert_eq!(open_fds(), before, "descriptors leaked");
    send_raw(&socket, &valid_packet(&"after".to_string()), &[]);
    assert_eq!(receiver.recv().unwrap(), "after");
}

#[test]
fn garbage_payload_is_a_serialization_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (socket, receiver) = hostile_client();
    let mut packet = header(0, 0, 0, 3);
    packet.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
    send_raw(&socket, &packet, &[]);
    assert!(matches!(receiver.recv(), Err(IpcError::SerializationError(_))));
}

#[test]
fn a_message_that_refers_to_descriptors_twice_is_refused() {
    // Two channel indices both pointing at descriptor 0: the second claim fails.
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (server, name) = IpcOneShotServer::<(IpcSender<u8>, IpcSender<u8>)>::new().unwrap();
    let accepting = std::thread::spawn(move || server.accept());
    let socket = socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
    connect(&socket, &SocketAddrUnix::new(name.as_str()).unwrap()).unwrap();
    let (a, _b) =
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
    let mut packet = header(0, 1, 0, 2);
    packet.extend_from_slice(&[0, 0]);
    send_raw(&socket, &packet, &[&[a.as_fd()]]);
    assert!(matches!(accepting.join().unwrap(), Err(IpcError::SerializationError(_))));
}

#[test]
fn shared_memory_from_a_peer_is_sealed_and_cannot_be_rewritten() {
    // Opens descriptors, so it must not overlap the tests that count them.
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let region = IpcSharedMemory::from_bytes(b"immutable");
    let (tx, rx) = crossproc::ipc::os_channel::<IpcSharedMemory>().unwrap();
    tx.send(region).unwrap();
    let received = rx.recv().unwrap();
    assert_eq!(&*received, b"immutable");
}

/// A recursive message type: decoding it recurses once per level.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Tree {
    Leaf,
    Node(Vec<Tree>),
}

#[test]
fn a_deeply_nested_value_is_an_error_not_a_stack_overflow() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (server, name) = IpcOneShotServer::<Tree>::new().unwrap();
    let accepting = std::thread::spawn(move || server.accept().unwrap());
    let socket = socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
    connect(&socket, &SocketAddrUnix::new(name.as_str()).unwrap()).unwrap();
    send_raw(&socket, &valid_packet(&Tree::Leaf), &[]);
    let (receiver, first) = accepting.join().unwrap();
    assert!(matches!(first, Tree::Leaf));
    // 100,000 levels of Node([...]): far more than any stack holds if decoded recursively.
    let mut payload = [1u8, 1].repeat(100_000);
    payload.push(0);
    let mut packet = header(0, 0, 0, payload.len() as u64);
    packet.extend_from_slice(&payload);
    send_raw(&socket, &packet, &[]);
    assert!(matches!(receiver.recv(), Err(IpcError::SerializationError(_))));
    // Within the limit, the same shape decodes.
    let mut payload = [1u8, 1].repeat(50);
    payload.push(0);
    let mut packet = header(0, 0, 0, payload.len() as u64);
    packet.extend_from_slice(&payload);
    send_raw(&socket, &packet, &[]);
    assert!(matches!(receiver.recv().unwrap(), Tree::Node(_)));
}

const ENTRY: &str = "child_entry";

/// The child side of the tests below; does nothing unless started by one of them.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "unallocatable_payload" => unallocatable_payload_child(),
        other => panic!("unknown child role {other}"),
    }
}

/// A peer announces a 1 GiB payload (in a sparse memfd, which costs it nothing) to a process
/// whose address space has room to map it but not also to allocate a copy: that receive fails,
/// the process lives on, and the next message on the channel arrives.
#[test]
fn a_payload_the_receiver_cannot_allocate_fails_that_message_only() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let child = child_command(ENTRY, "unallocatable_payload").spawn().unwrap();
    assert_child_succeeds(child);
}

fn unallocatable_payload_child() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    const LEN: u64 = 1 << 30;
    let (socket, receiver) = hostile_client();
    let memfd = sealed_memfd(4096 + LEN);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .unwrap()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    // Room for the payload's mapping or for its copy, not for both.
    let limit = vm_kib * 1024 + LEN * 3 / 2;
    setrlimit(Resource::As, Rlimit { current: Some(limit), maximum: None }).unwrap();
    send_raw(&socket, &header(PAYLOAD_IN_POOLED_MEMFD, 0, 0, LEN), &[&[memfd.as_fd()]]);
    match receiver.recv() {
        Err(IpcError::Io(error)) => assert_eq!(error.kind(), std::io::ErrorKind::OutOfMemory, "{error}"),
        other => panic!("expected an out-of-memory error, got {other:?}"),
    }
    send_raw(&socket, &valid_packet(&"after".to_string()), &[]);
    assert_eq!(receiver.recv().unwrap(), "after");
}

/// A packet from a crossproc build that speaks another wire-protocol version (here 2, whose
/// channels made their ring at once) is refused with an error that names both versions, and the
/// channel goes on.
#[test]
fn a_packet_in_another_protocol_version_is_a_clear_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (socket, receiver) = hostile_client();
    let mut packet = valid_packet(&"from the past".to_string());
    packet[3] = b'2';
    send_raw(&socket, &packet, &[]);
    match receiver.recv() {
        Err(IpcError::Io(error)) => {
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
            let text = error.to_string();
            assert!(text.contains("version 3") && text.contains("version 2"), "{text}");
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    send_raw(&socket, &valid_packet(&"same version".to_string()), &[]);
    assert_eq!(receiver.recv().unwrap(), "same version");
}

/// A server from a build with another protocol version answers a connection in its version:
/// the client's `connect` says so.
#[test]
fn a_server_in_another_protocol_version_fails_connect_clearly() {
    use rustix::net::{accept, bind, listen};
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("older-server");
    let listener = socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
    bind(&listener, &SocketAddrUnix::new(path.as_path()).unwrap()).unwrap();
    listen(&listener, 1).unwrap();
    let server = std::thread::spawn(move || {
        let connection = accept(&listener).unwrap();
        rustix::net::send(&connection, b"CXP2-OK\0", rustix::net::SendFlags::NOSIGNAL).unwrap();
        connection // kept open until the client has read the verdict
    });
    let error = IpcSender::<u8>::connect(path.to_str().unwrap().to_owned()).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("version 3") && text.contains("version 2"), "{text}");
    drop(server.join().unwrap());
}

/// Review 2 (side-socket path): a side "socket" that is a pipe makes `recvmsg` fail with
/// ENOTSOCK, which `recv_side_socket` returns as is: not `InvalidData`, so the message is not
/// refused as malformed but reported as an I/O failure of the channel.
#[test]
fn a_side_socket_that_is_a_pipe_is_refused() {
    expect_refused(&header(HANDLES_ON_SIDE_SOCKET, 300, 0, 0), || {
        let (read_end, _write_end) = pipe();
        vec![read_end]
    });
}

/// Review 2: the same forged message in a receiver set: the set takes the error for a closed
/// channel, reports `ChannelClosed` and drops (closes) the member, so one hostile sender ends
/// the channel for every honest sender of it (a router ends the route the same way).
#[test]
fn a_side_socket_that_is_a_pipe_does_not_close_the_channel_in_a_set() {
    use crossproc::ipc::{IpcReceiverSet, IpcSelectionResult};
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (socket, receiver) = hostile_client();
    let mut set = IpcReceiverSet::new().unwrap();
    let id = set.add(receiver).unwrap();
    {
        let (read_end, _write_end) = pipe();
        send_raw(&socket, &header(HANDLES_ON_SIDE_SOCKET, 300, 0, 0), &[&[read_end.as_fd()]]);
    }
    send_raw(&socket, &valid_packet(&"after".to_string()), &[]);
    let mut delivered = false;
    for _ in 0..2 {
        for result in set.select().unwrap() {
            match result {
                IpcSelectionResult::ChannelClosed(closed) => {
                    panic!("the set closed member {closed} (of {id}) over one forged message")
                }
                IpcSelectionResult::MessageReceived(_, message) => {
                    assert_eq!(message.to::<String>().unwrap(), "after");
                    delivered = true;
                }
            }
        }
        if delivered {
            break;
        }
    }
    assert!(delivered, "the message behind the forged one never came");
}

/// Review 2: a sealed region larger than any address space (2^62 bytes, a sparse memfd any
/// process can make) fails its `mmap` with ENOMEM, which the receive returns as is
/// (`OutOfMemory`), not `InvalidData`: a receiver set then takes the channel for closed.
#[test]
fn a_region_too_large_to_map_is_refused() {
    expect_refused(&header(0, 0, 1, 0), || vec![sealed_memfd(1 << 62)]);
}
