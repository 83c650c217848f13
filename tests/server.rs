//! `IpcServer` with real processes: many clients at once, threads connecting repeatedly,
//! clients that die or send garbage, refused clients, kernel credentials, stale socket paths.

#![cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]

mod util;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::time::Duration;

use crossproc::ipc::{
    AccessPolicy, IpcClient, IpcReceiverSet, IpcSelectionResult, IpcSender, IpcServer, PeerCredentials,
};
use crossproc::TryRecvError;
use util::{assert_child_succeeds, child_role, server_name, spawn_child, with_watchdog};

const ENTRY: &str = "child_entry";
const MESSAGES_PER_CLIENT: u32 = 200;

/// The child side of every test in this file; does nothing unless started by `spawn_child`.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "stream" => {
            let tx = IpcSender::<(u32, u32)>::connect(server_name()).unwrap();
            let me = std::process::id();
            for seq in 0..MESSAGES_PER_CLIENT {
                tx.send((me, seq)).unwrap();
            }
        }
        "expect_refused" => {
            let error = IpcSender::<(u32, u32)>::connect(server_name()).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
        }
        "bind_and_hang" => {
            let _server = IpcServer::<u8>::bind(server_name()).unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        #[cfg(target_os = "linux")]
        "silent_flood" => silent_flood(),
        other => panic!("unknown child role {other}"),
    }
}

/// What a "silent_flood" child prints once all its connections are open.
#[cfg(target_os = "linux")]
const FLOODED: &str = "crossproc-test: flooded";

/// Opens as many connections to the server as its descriptor limit allows (up to 6,000) that
/// never say a word, says so, and keeps them open.
#[cfg(target_os = "linux")]
fn silent_flood() {
    use rustix::net::{connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.map_or(6_100, |hard| hard.min(6_100));
    setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum: limit.maximum }).unwrap();
    let address = SocketAddrUnix::new(server_name().as_str()).unwrap();
    let silent: Vec<_> = (0..wanted.saturating_sub(100).min(6_000))
        .map(|_| {
            let socket = socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
            connect(&socket, &address).unwrap();
            socket
        })
        .collect();
    assert!(silent.len() >= 2_000, "only {} connections", silent.len());
    println!("{FLOODED}");
    std::thread::sleep(Duration::from_secs(600));
}

/// Thousands of connections that never speak neither lock out a client that does, nor take
/// more of the server's descriptors than its waiting room (SECURITY.md).
#[cfg(target_os = "linux")]
#[test]
fn silent_connections_lock_out_nobody() {
    with_watchdog(Duration::from_secs(120), || {
        let (server, name) = IpcServer::<String>::new().unwrap();
        let before = util::open_fds();
        let mut flood = util::child_command(ENTRY, "silent_flood")
            .env(util::SERVER_VAR, &name)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        util::wait_for_line(&mut flood, FLOODED);
        // At most the waiting room (1,024 clients of one descriptor, SECURITY.md) for 6,000
        // silent connections; the margin is for the other tests of this file, which run
        // meanwhile in this process.
        let held = util::open_fds().saturating_sub(before);
        assert!(held <= 1024 + 512, "the server holds {held} descriptors for silent connections");
        for round in 0..3 {
            let name = name.clone();
            let client = std::thread::spawn(move || {
                IpcSender::<String>::connect(name).unwrap().send(format!("spoke at once {round}")).unwrap()
            });
            let (_, first, _) =
                server.accept_timeout(Duration::from_secs(30)).expect("a client that speaks is accepted");
            assert_eq!(first, format!("spoke at once {round}"));
            client.join().unwrap();
        }
        flood.kill().unwrap();
        flood.wait().unwrap();
    });
}

#[test]
fn sixty_four_client_processes_stream_at_once() {
    with_watchdog(Duration::from_secs(120), || {
        let (server, name) = IpcServer::<(u32, u32)>::new().unwrap();
        let mut set = IpcReceiverSet::new().unwrap();
        let server_id = set.add_server(server).unwrap();
        let children: Vec<_> = (0..64).map(|_| spawn_child(ENTRY, "stream", &name)).collect();
        let pids: Vec<u32> = children.iter().map(|child| child.id()).collect();
        let me = PeerCredentials::of_this_process();

        let mut credentials_by_id: HashMap<u64, PeerCredentials> = HashMap::new();
        let mut next_seq: HashMap<u32, u32> = HashMap::new();
        let mut closed = 0;
        while closed < 64 {
            for event in set.select().unwrap() {
                match event {
                    IpcSelectionResult::MessageReceived(id, message) if id == server_id => {
                        let client = message.to::<IpcClient<(u32, u32)>>().unwrap();
                        assert!(pids.contains(&client.credentials.pid), "credentials name a child");
                        assert_eq!((client.credentials.uid, client.credentials.gid), (me.uid, me.gid));
                        let client_id = set.add(client.receiver).unwrap();
                        credentials_by_id.insert(client_id, client.credentials);
                    }
                    IpcSelectionResult::MessageReceived(id, message) => {
                        let (pid, seq) = message.to::<(u32, u32)>().unwrap();
                        assert_eq!(pid, credentials_by_id[&id].pid, "the kernel's pid matches the client's");
                        let expected = next_seq.entry(pid).or_insert(0);
                        assert_eq!(seq, *expected, "stream of {pid} out of order");
                        *expected += 1;
                    }
                    IpcSelectionResult::ChannelClosed(id) => {
                        assert_ne!(id, server_id);
                        closed += 1;
                    }
                }
            }
        }
        assert_eq!(next_seq.len(), 64);
        assert!(next_seq.values().all(|&count| count == MESSAGES_PER_CLIENT), "every stream arrived whole");
        for child in children {
            assert_child_succeeds(child);
        }
    });
}

#[test]
fn a_hundred_threads_connect_repeatedly() {
    with_watchdog(Duration::from_secs(120), || {
        let (server, name) = IpcServer::<(u32, u32)>::new().unwrap();
        let threads: Vec<_> = (0..100)
            .map(|thread| {
                let name = name.clone();
                std::thread::spawn(move || {
                    for round in 0..10 {
                        IpcSender::<(u32, u32)>::connect(name.clone()).unwrap().send((thread, round)).unwrap();
                    }
                })
            })
            .collect();
        let mut seen = vec![[false; 10]; 100];
        for _ in 0..1000 {
            let (_rx, (thread, round), credentials) = server.accept().unwrap();
            assert_eq!(credentials.pid, std::process::id());
            assert!(!seen[thread as usize][round as usize], "duplicate client");
            seen[thread as usize][round as usize] = true;
        }
        assert!(seen.iter().all(|rounds| rounds.iter().all(|&s| s)));
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(matches!(server.try_accept(), Err(TryRecvError::Empty)));
    });
}

/// Connects to the server `name` below crossproc and writes bytes that are no crossproc frame.
#[cfg(target_os = "linux")]
fn garbage_client(name: &str) -> std::os::fd::OwnedFd {
    use rustix::net::{connect, send, socket_with, AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
    let raw = socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
    connect(&raw, &SocketAddrUnix::new(name).unwrap()).unwrap();
    send(&raw, b"definitely not a crossproc frame", SendFlags::empty()).unwrap();
    raw
}

/// Opens the server's pipe `name` below crossproc and writes bytes that are no crossproc frame.
#[cfg(windows)]
fn garbage_client(name: &str) -> std::fs::File {
    use std::io::Write;
    let mut pipe = std::fs::OpenOptions::new().read(true).write(true).open(name).unwrap();
    pipe.write_all(b"definitely not a crossproc frame").unwrap();
    pipe
}

#[test]
fn silent_dying_and_garbage_clients_cost_only_their_connection() {
    with_watchdog(Duration::from_secs(60), || {
        let (server, name) = IpcServer::<String>::new().unwrap();
        // A client that connects and says nothing, one that leaves at once, one that sends garbage.
        let _silent = IpcSender::<String>::connect(name.clone()).unwrap();
        drop(IpcSender::<String>::connect(name.clone()).unwrap());
        let _garbage = garbage_client(&name);
        // A process that dies with SIGKILL right after connecting.
        let mut dying = spawn_child(ENTRY, "stream", &name);
        dying.kill().unwrap();
        dying.wait().unwrap();

        IpcSender::<String>::connect(name.clone()).unwrap().send("good client".into()).unwrap();
        let mut greetings = Vec::new();
        while greetings.is_empty() || greetings.iter().all(|g: &String| g != "good client") {
            let (_rx, greeting, _) = server.accept_timeout(Duration::from_secs(30)).unwrap();
            greetings.push(greeting);
        }
        // Only well-formed first messages ever reach accept.
        assert!(greetings.iter().all(|g| g == "good client" || g.is_empty()));
    });
}

#[test]
fn refused_clients_get_a_clear_error_and_are_never_seen() {
    with_watchdog(Duration::from_secs(60), || {
        let me = PeerCredentials::of_this_process();
        let policies = [
            AccessPolicy::Uids(vec![me.uid.wrapping_add(12345)]),
            AccessPolicy::custom(move |peer| peer.pid == me.pid), // only this very process
        ];
        for policy in policies {
            let (server, name) = IpcServer::<(u32, u32)>::new_with_policy(policy).unwrap();
            assert_child_succeeds(spawn_child(ENTRY, "expect_refused", &name));
            assert!(matches!(server.accept_timeout(Duration::from_millis(200)), Err(TryRecvError::Empty)));
        }
        // The same-user default admits us.
        let (server, name) = IpcServer::<u8>::new().unwrap();
        IpcSender::<u8>::connect(name).unwrap().send(1).unwrap();
        let (_rx, first, credentials) = server.accept().unwrap();
        assert_eq!((first, credentials), (1, me));
    });
}

#[test]
#[cfg(target_os = "linux")] // Windows pipes leave no stale name behind
fn a_stale_socket_from_a_killed_server_does_not_block_a_new_one() {
    with_watchdog(Duration::from_secs(60), || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.sock");
        let path_name = path.to_str().unwrap().to_owned();
        let mut crashed = spawn_child(ENTRY, "bind_and_hang", &path_name);
        // Wait until the first server answers connections.
        while IpcSender::<u8>::connect(path_name.clone()).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // While it lives, the path is taken.
        let error = IpcServer::<u8>::bind(&path).expect_err("bound over a live server");
        assert_eq!(error.kind(), ErrorKind::AddrInUse);
        crashed.kill().unwrap();
        crashed.wait().unwrap();
        assert!(path.exists(), "a killed server leaves its socket behind");

        let server = IpcServer::<u8>::bind(&path).unwrap();
        IpcSender::<u8>::connect(path_name.clone()).unwrap().send(7).unwrap();
        assert_eq!(server.accept().unwrap().1, 7);
        drop(server);
        assert!(!path.exists(), "the name is removed when the server is dropped");

        // A path that holds something other than a socket is never replaced.
        std::fs::write(&path, b"precious").unwrap();
        assert_eq!(IpcServer::<u8>::bind(&path).unwrap_err().kind(), ErrorKind::AddrInUse);
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    });
}

#[test]
fn try_accept_and_accept_timeout() {
    let (server, name) = IpcServer::<u8>::new().unwrap();
    assert_eq!(server.name(), name);
    assert!(matches!(server.try_accept(), Err(TryRecvError::Empty)));
    assert!(matches!(server.accept_timeout(Duration::from_millis(20)), Err(TryRecvError::Empty)));
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        let tx = IpcSender::<u8>::connect(name).unwrap();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
    });
    let (rx, first, _) = server.accept_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((first, rx.recv().unwrap()), (1, 2));
    client.join().unwrap();
}

#[test]
fn a_dropped_server_refuses_new_connections() {
    let (server, name) = IpcServer::<u8>::new().unwrap();
    drop(server);
    assert!(IpcSender::<u8>::connect(name).is_err());
}

/// Windows: connections that open the server's pipe and never send their hello (hundreds of
/// them, more than the handshakes a server runs at once) do not keep out a client that speaks.
#[cfg(windows)]
#[test]
fn silent_handshakes_lock_out_nobody() {
    use windows_sys::Win32::Foundation::{CloseHandle, GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::Storage::FileSystem::{CreateFileW, OPEN_EXISTING};
    use windows_sys::Win32::System::Pipes::WaitNamedPipeW;
    with_watchdog(Duration::from_secs(120), || {
        let (server, name) = IpcServer::<String>::new().unwrap();
        let path: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
        let mut silent = Vec::new();
        for _ in 0..2_000 {
            if silent.len() == 200 {
                break;
            }
            // SAFETY: `path` is zero-terminated UTF-16; the handle is closed below.
            let handle = unsafe {
                CreateFileW(
                    path.as_ptr(),
                    GENERIC_READ | GENERIC_WRITE,
                    0,
                    std::ptr::null(),
                    OPEN_EXISTING,
                    0,
                    std::ptr::null_mut(),
                )
            };
            if handle == INVALID_HANDLE_VALUE {
                // Every instance is taken until the acceptor makes the next: wait for it.
                // SAFETY: `path` is zero-terminated UTF-16.
                unsafe { WaitNamedPipeW(path.as_ptr(), 1000) };
            } else {
                silent.push(handle);
            }
        }
        assert!(silent.len() >= 64, "only {} silent connections opened", silent.len());
        let speaker =
            std::thread::spawn(move || IpcSender::<String>::connect(name).unwrap().send("spoke".into()).unwrap());
        let (_, first, _) = server.accept_timeout(Duration::from_secs(60)).expect("a client that speaks is accepted");
        assert_eq!(first, "spoke");
        speaker.join().unwrap();
        for handle in silent {
            // SAFETY: each handle was opened above and is closed once.
            unsafe { CloseHandle(handle) };
        }
    });
}
