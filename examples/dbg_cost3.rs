use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use std::time::Instant;
fn main() {
    let n = 2000u32;
    let mut t = [std::time::Duration::ZERO; 6];
    for _ in 0..n {
        let a = Instant::now();
        let fd = memfd_create("x", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        let b = Instant::now();
        ftruncate(&fd, 2048 + 16 * 32768).unwrap();
        let c = Instant::now();
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL).unwrap();
        let d = Instant::now();
        let p = unsafe {
            mmap(std::ptr::null_mut(), 2048 + 16 * 32768, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0)
                .unwrap()
        };
        unsafe { (*(p as *const std::sync::atomic::AtomicU64)).fetch_or(2, std::sync::atomic::Ordering::AcqRel) };
        let e = Instant::now();
        unsafe { munmap(p, 2048 + 16 * 32768).unwrap() };
        let f = Instant::now();
        drop(fd);
        let g = Instant::now();
        t[0] += b - a;
        t[1] += c - b;
        t[2] += d - c;
        t[3] += e - d;
        t[4] += f - e;
        t[5] += g - f;
    }
    for (name, d) in ["memfd_create", "ftruncate", "seals", "mmap", "munmap", "close"].iter().zip(t) {
        eprintln!("{name}: {:?}", d / n);
    }
}
