use rustix::fs::{memfd_create, MemfdFlags};
use rustix::net::*;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::time::Instant;
fn main() {
    let n = 2000u32;
    let mut t = [std::time::Duration::ZERO; 4];
    let memfd = memfd_create("x", MemfdFlags::CLOEXEC).unwrap();
    for _ in 0..n {
        let a = Instant::now();
        let (x, y) = socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
        let b = Instant::now();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [memfd.as_fd()];
        control.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(&y, &[std::io::IoSlice::new(b"12345678")], &mut control, SendFlags::DONTWAIT).unwrap();
        let c = Instant::now();
        drop(y);
        let d = Instant::now();
        drop(x);
        let e = Instant::now();
        t[0] += b - a;
        t[1] += c - b;
        t[2] += d - c;
        t[3] += e - d;
    }
    for (name, d) in ["socketpair", "sendmsg fd", "close sender-side", "close holder"].iter().zip(t) {
        eprintln!("{name}: {:?}", d / n);
    }
}
