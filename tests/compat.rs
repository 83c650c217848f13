//! Drop-in compatibility with `ipc-channel` 0.21–0.23: every public path of its API resolves
//! with its signature (this file fails to compile otherwise; `docs/compatibility.md` is the
//! list), and the `platform` module works as ipc-channel's does.

// The signatures are spelled out in full on purpose: they are what is being checked.
#![allow(clippy::type_complexity)]

use std::io;
use std::time::Duration;

// The one line a migrating program changes is its Cargo.toml; in code, the crate is
// `ipc_channel`.
use crossproc as ipc_channel;

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcMessage, IpcOneShotServer, IpcReceiver, IpcReceiverSet,
    IpcSelectionResult, IpcSender, IpcSharedMemory, OpaqueIpcReceiver, OpaqueIpcSender,
};
use ipc_channel::platform::{
    self, OsIpcChannel, OsIpcOneShotServer, OsIpcReceiver, OsIpcReceiverSet, OsIpcSelectionResult, OsIpcSender,
    OsIpcSharedMemory, OsOpaqueIpcChannel, OsTrySelectError,
};
use ipc_channel::router::{
    RouterMultiHandler, RouterOneShotHandler, RouterProxy, TypedRouterMultiHandler, TypedRouterOneShotHandler, ROUTER,
};
use ipc_channel::{IpcError, SerDeError, TryRecvError, TrySelectError};

fn clone_debug_send_sync<T: Clone + std::fmt::Debug + Send + Sync>() {}
fn serde<T: serde::Serialize + for<'de> serde::Deserialize<'de>>() {}
fn error<T: std::error::Error + std::fmt::Display + std::fmt::Debug + Send + Sync + 'static>() {}
fn debug_send<T: std::fmt::Debug + Send>() {}

#[test]
fn every_ipc_and_router_path_resolves_with_ipc_channels_signature() {
    // ipc
    let _: fn() -> Result<(IpcSender<u8>, IpcReceiver<u8>), io::Error> = ipc::channel::<u8>;
    let _: fn() -> Result<(IpcBytesSender, IpcBytesReceiver), io::Error> = ipc::bytes_channel;
    let _: fn(String) -> Result<IpcSender<u8>, io::Error> = IpcSender::<u8>::connect;
    let _: fn(&IpcSender<u8>, u8) -> Result<(), IpcError> = IpcSender::<u8>::send;
    let _: fn(IpcSender<u8>) -> OpaqueIpcSender = IpcSender::<u8>::to_opaque;
    let _: fn(&IpcReceiver<u8>) -> Result<u8, IpcError> = IpcReceiver::<u8>::recv;
    let _: fn(&IpcReceiver<u8>) -> Result<u8, TryRecvError> = IpcReceiver::<u8>::try_recv;
    let _: fn(&IpcReceiver<u8>, Duration) -> Result<u8, TryRecvError> = IpcReceiver::<u8>::try_recv_timeout;
    let _: fn(IpcReceiver<u8>) -> OpaqueIpcReceiver = IpcReceiver::<u8>::to_opaque;
    let _: fn(&IpcBytesSender, &[u8]) -> Result<(), io::Error> = IpcBytesSender::send;
    let _: fn(&IpcBytesReceiver) -> Result<Vec<u8>, IpcError> = IpcBytesReceiver::recv;
    let _: fn(&IpcBytesReceiver) -> Result<Vec<u8>, TryRecvError> = IpcBytesReceiver::try_recv;
    let _: fn(OpaqueIpcSender) -> IpcSender<u8> = OpaqueIpcSender::to::<u8>;
    let _: fn(OpaqueIpcReceiver) -> IpcReceiver<u8> = OpaqueIpcReceiver::to::<u8>;
    let _: fn(Vec<u8>) -> IpcMessage = IpcMessage::from_data;
    let _: fn(IpcMessage) -> Result<u8, SerDeError> = IpcMessage::to::<u8>;
    let _: fn() -> Result<IpcReceiverSet, io::Error> = IpcReceiverSet::new;
    let _: fn(&mut IpcReceiverSet, IpcReceiver<u8>) -> Result<u64, io::Error> = IpcReceiverSet::add::<u8>;
    let _: fn(&mut IpcReceiverSet, OpaqueIpcReceiver) -> Result<u64, io::Error> = IpcReceiverSet::add_opaque;
    let _: fn(&mut IpcReceiverSet) -> Result<Vec<IpcSelectionResult>, io::Error> = IpcReceiverSet::select;
    let _: fn(&mut IpcReceiverSet) -> Result<Vec<IpcSelectionResult>, TrySelectError> = IpcReceiverSet::try_select;
    let _: fn(&mut IpcReceiverSet, Duration) -> Result<Vec<IpcSelectionResult>, TrySelectError> =
        IpcReceiverSet::try_select_timeout;
    let _: fn(IpcSelectionResult) -> (u64, IpcMessage) = IpcSelectionResult::unwrap;
    let _ = |id: u64, message: IpcMessage| match IpcSelectionResult::MessageReceived(id, message) {
        IpcSelectionResult::MessageReceived(..) | IpcSelectionResult::ChannelClosed(_) => {}
    };
    let _: fn(&[u8]) -> IpcSharedMemory = IpcSharedMemory::from_bytes;
    let _: fn(u8, usize) -> IpcSharedMemory = IpcSharedMemory::from_byte;
    let _: fn(IpcSharedMemory) -> Option<Vec<u8>> = IpcSharedMemory::take;
    let _: unsafe fn(&mut IpcSharedMemory) -> &mut [u8] = IpcSharedMemory::deref_mut;
    let _: fn() -> Result<(IpcOneShotServer<u8>, String), io::Error> = IpcOneShotServer::<u8>::new;
    let _: fn(IpcOneShotServer<u8>) -> Result<(IpcReceiver<u8>, u8), IpcError> = IpcOneShotServer::<u8>::accept;
    clone_debug_send_sync::<IpcSender<u8>>();
    clone_debug_send_sync::<IpcBytesSender>();
    clone_debug_send_sync::<OpaqueIpcSender>();
    clone_debug_send_sync::<IpcSharedMemory>();
    debug_send::<IpcReceiver<u8>>();
    debug_send::<IpcBytesReceiver>();
    debug_send::<OpaqueIpcReceiver>();
    debug_send::<IpcMessage>();
    debug_send::<IpcSelectionResult>();
    serde::<IpcSender<u8>>();
    serde::<IpcReceiver<u8>>();
    serde::<IpcBytesSender>();
    serde::<IpcBytesReceiver>();
    serde::<OpaqueIpcSender>();
    serde::<OpaqueIpcReceiver>();
    serde::<IpcSharedMemory>();
    fn shared_memory_traits<T: std::ops::Deref<Target = [u8]> + PartialEq>() {}
    shared_memory_traits::<IpcSharedMemory>();

    // errors, at the crate root and where ipc re-exports them
    error::<IpcError>();
    error::<TryRecvError>();
    error::<TrySelectError>();
    error::<SerDeError>();
    let _: fn(SerDeError) -> IpcError = IpcError::from;
    let _: fn(io::Error) -> IpcError = IpcError::from;
    let _: fn(IpcError) -> TryRecvError = TryRecvError::from;
    let _: fn(io::Error) -> TrySelectError = TrySelectError::from;
    let _: fn(postcard::Error) -> SerDeError = SerDeError::from;
    let _ = |e: IpcError| match e {
        IpcError::SerializationError(_) | IpcError::Io(_) | IpcError::Disconnected => {}
    };
    let _ = |e: TryRecvError| match e {
        TryRecvError::IpcError(_) | TryRecvError::Empty => {}
    };
    let _ = |e: TrySelectError| match e {
        TrySelectError::IoError(_) | TrySelectError::Empty => {}
    };
    let _: Option<ipc::IpcError> = None;
    let _: Option<ipc::TryRecvError> = None;
    let _: Option<ipc::TrySelectError> = None;

    // router
    let _: &RouterProxy = &ROUTER;
    let _: fn() -> RouterProxy = RouterProxy::new;
    let _: fn(&RouterProxy, IpcReceiver<u8>, TypedRouterMultiHandler<u8>) = RouterProxy::add_typed_route::<u8>;
    let _: fn(&RouterProxy, IpcReceiver<u8>, TypedRouterOneShotHandler<u8>) =
        RouterProxy::add_typed_one_shot_route::<u8>;
    let _: fn(&RouterProxy) = RouterProxy::shutdown;
    let _: fn(&RouterProxy, IpcReceiver<u8>, crossbeam_channel::Sender<u8>) =
        RouterProxy::route_ipc_receiver_to_crossbeam_sender::<u8>;
    let _: fn(&RouterProxy, IpcReceiver<u8>) -> crossbeam_channel::Receiver<u8> =
        RouterProxy::route_ipc_receiver_to_new_crossbeam_receiver::<u8>;
    let _: Option<RouterMultiHandler> = Some(Box::new(|_: IpcMessage| {}));
    let _: Option<RouterOneShotHandler> = Some(Box::new(|_: IpcMessage| {}));
}

#[cfg(feature = "async")]
#[test]
fn the_asynch_paths_resolve() {
    fn fused<S: futures::stream::FusedStream<Item = Result<u8, SerDeError>> + Unpin + Send>() {}
    fused::<ipc_channel::asynch::IpcStream<u8>>();
    let _: fn(IpcReceiver<u8>) -> ipc_channel::asynch::IpcStream<u8> = IpcReceiver::<u8>::to_stream;
}

#[test]
fn every_platform_path_resolves_with_ipc_channels_signature() {
    type OsError = platform::OsError;
    let _: fn() -> Result<(OsIpcSender, OsIpcReceiver), OsError> = platform::channel;
    let _: fn(String) -> Result<OsIpcSender, OsError> = OsIpcSender::connect;
    let _: fn() -> usize = OsIpcSender::get_max_fragment_size;
    let _: fn(&OsIpcSender, &[u8], Vec<OsIpcChannel>, Vec<OsIpcSharedMemory>) -> Result<(), OsError> =
        OsIpcSender::send;
    let _: fn(&OsIpcReceiver) -> OsIpcReceiver = OsIpcReceiver::consume;
    let _: fn(&OsIpcReceiver) -> Result<IpcMessage, OsError> = OsIpcReceiver::recv;
    let _: fn(&OsIpcReceiver) -> Result<IpcMessage, OsError> = OsIpcReceiver::try_recv;
    let _: fn(&OsIpcReceiver, Duration) -> Result<IpcMessage, OsError> = OsIpcReceiver::try_recv_timeout;
    let _: fn() -> Result<OsIpcReceiverSet, OsError> = OsIpcReceiverSet::new;
    let _: fn(&mut OsIpcReceiverSet, OsIpcReceiver) -> Result<u64, OsError> = OsIpcReceiverSet::add;
    let _: fn(&mut OsIpcReceiverSet) -> Result<Vec<OsIpcSelectionResult>, OsError> = OsIpcReceiverSet::select;
    let _: fn(&mut OsIpcReceiverSet) -> Result<Vec<OsIpcSelectionResult>, OsTrySelectError> =
        OsIpcReceiverSet::try_select;
    let _: fn(&mut OsIpcReceiverSet, Duration) -> Result<Vec<OsIpcSelectionResult>, OsTrySelectError> =
        OsIpcReceiverSet::try_select_timeout;
    let _: fn(OsIpcSelectionResult) -> (u64, IpcMessage) = OsIpcSelectionResult::unwrap;
    let _ = |r: OsIpcSelectionResult| match r {
        OsIpcSelectionResult::DataReceived(..) | OsIpcSelectionResult::ChannelClosed(_) => {}
    };
    let _ = |e: OsTrySelectError| match e {
        OsTrySelectError::IoError(_) | OsTrySelectError::Empty => {}
    };
    let _: fn(&mut OsOpaqueIpcChannel) -> OsIpcSender = OsOpaqueIpcChannel::to_sender;
    let _: fn(&mut OsOpaqueIpcChannel) -> OsIpcReceiver = OsOpaqueIpcChannel::to_receiver;
    let _ = |c: OsIpcChannel| match c {
        OsIpcChannel::Sender(_) | OsIpcChannel::Receiver(_) => {}
    };
    let _: fn(u8, usize) -> OsIpcSharedMemory = OsIpcSharedMemory::from_byte;
    let _: fn(&[u8]) -> OsIpcSharedMemory = OsIpcSharedMemory::from_bytes;
    let _: fn(OsIpcSharedMemory) -> Option<Vec<u8>> = OsIpcSharedMemory::take;
    let _: unsafe fn(&mut OsIpcSharedMemory) -> &mut [u8] = OsIpcSharedMemory::deref_mut;
    let _: fn() -> Result<(OsIpcOneShotServer, String), OsError> = OsIpcOneShotServer::new;
    let _: fn(OsIpcOneShotServer) -> Result<(OsIpcReceiver, IpcMessage), OsError> = OsIpcOneShotServer::accept;
    let _: fn(&OsError) -> bool = OsError::channel_is_closed;
    let _: fn(OsError) -> io::Error = io::Error::from;
    let _: fn(OsError) -> IpcError = IpcError::from;
    let _: fn(OsError) -> TryRecvError = TryRecvError::from;
    let _: fn(OsError) -> OsTrySelectError = OsTrySelectError::from;
    clone_debug_send_sync::<OsIpcSender>();
    clone_debug_send_sync::<OsIpcSharedMemory>();
    debug_send::<OsIpcReceiver>();
    debug_send::<OsIpcChannel>();
    debug_send::<OsOpaqueIpcChannel>();
    error::<OsError>();
    fn os_shared_memory_traits<T: std::ops::Deref<Target = [u8]> + PartialEq>() {}
    os_shared_memory_traits::<OsIpcSharedMemory>();
}

#[test]
fn platform_channels_carry_data_channels_and_shared_memory() {
    let (tx, rx) = platform::channel().unwrap();
    let (inner_tx, inner_rx) = platform::channel().unwrap();
    let (moved_tx, moved_rx) = platform::channel().unwrap();
    let data = postcard::to_stdvec(&(7u32, 0u32, 1u32, 0u32)).unwrap();
    let channels = vec![OsIpcChannel::Sender(inner_tx.clone()), OsIpcChannel::Receiver(moved_rx)];
    tx.send(&data, channels, vec![OsIpcSharedMemory::from_byte(3, 4096)]).unwrap();

    type Decoded = (u32, IpcSender<String>, IpcReceiver<String>, IpcSharedMemory);
    let (number, sender, receiver, region): Decoded = rx.recv().unwrap().to().unwrap();
    assert_eq!(number, 7);
    assert!(region.iter().all(|&b| b == 3) && region.len() == 4096);
    sender.send("through the received sender".into()).unwrap();
    let reply: String = inner_rx.recv().unwrap().to().unwrap();
    assert_eq!(reply, "through the received sender");
    // The receiver moved with the message: what its senders send arrives there.
    let hello = postcard::to_stdvec("to the moved receiver").unwrap();
    moved_tx.send(&hello, vec![], vec![]).unwrap();
    assert_eq!(receiver.recv().unwrap(), "to the moved receiver");
}

#[test]
fn platform_receive_errors_convert_as_in_ipc_channel() {
    let (tx, rx) = platform::channel().unwrap();
    let empty = rx.try_recv().unwrap_err();
    assert!(!empty.channel_is_closed());
    assert!(matches!(TryRecvError::from(empty), TryRecvError::Empty));
    let timed_out = rx.try_recv_timeout(Duration::from_millis(1)).unwrap_err();
    assert!(matches!(TryRecvError::from(timed_out), TryRecvError::Empty));
    drop(tx);
    let closed = rx.recv().unwrap_err();
    assert!(closed.channel_is_closed());
    assert!(matches!(IpcError::from(closed), IpcError::Disconnected));
    assert!(matches!(TryRecvError::from(rx.try_recv().unwrap_err()), TryRecvError::IpcError(IpcError::Disconnected)));
    assert_eq!(io::Error::from(rx.recv().unwrap_err()).kind(), io::ErrorKind::ConnectionReset);
}

#[test]
fn a_consumed_platform_receiver_is_left_empty() {
    let (tx, rx) = platform::channel().unwrap();
    let taken = rx.consume();
    tx.send(&postcard::to_stdvec(&5u8).unwrap(), vec![], vec![]).unwrap();
    assert_eq!(taken.recv().unwrap().to::<u8>().unwrap(), 5);
    let error = rx.try_recv().unwrap_err();
    assert_eq!(io::Error::from(error).kind(), io::ErrorKind::NotConnected);
}

#[test]
fn platform_select_reports_messages_then_closure() {
    let mut set = OsIpcReceiverSet::new().unwrap();
    let (tx, rx) = platform::channel().unwrap();
    let id = set.add(rx).unwrap();
    assert!(matches!(set.try_select(), Err(OsTrySelectError::Empty)));
    tx.send(&postcard::to_stdvec(&1u16).unwrap(), vec![], vec![]).unwrap();
    let (got_id, message) = set.select().unwrap().remove(0).unwrap();
    assert_eq!((got_id, message.to::<u16>().unwrap()), (id, 1));
    drop(tx);
    let closed = set.try_select_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(closed[..], [OsIpcSelectionResult::ChannelClosed(closed_id)] if closed_id == id));
}

#[test]
fn platform_one_shot_server_hands_over_the_raw_first_message() {
    let (server, name) = OsIpcOneShotServer::new().unwrap();
    let client = std::thread::spawn(move || {
        let sender = OsIpcSender::connect(name).unwrap();
        sender.send(&postcard::to_stdvec("first").unwrap(), vec![], vec![]).unwrap();
        sender.send(&postcard::to_stdvec("second").unwrap(), vec![], vec![]).unwrap();
    });
    let (receiver, first) = server.accept().unwrap();
    assert_eq!(first.to::<String>().unwrap(), "first");
    assert_eq!(receiver.recv().unwrap().to::<String>().unwrap(), "second");
    client.join().unwrap();
}

#[test]
fn deref_mut_is_a_private_copy_on_write_view_that_sends_its_changes() {
    let mut region = IpcSharedMemory::from_byte(0, 8192);
    let untouched = region.clone();
    // SAFETY: crossproc's deref_mut has no precondition (a private copy).
    let view = unsafe { region.deref_mut() };
    view[0] = 1;
    view[8191] = 2;
    assert_eq!((region[0], region[8191]), (1, 2));
    assert_eq!((untouched[0], untouched[8191]), (0, 0), "a clone must not see the writes");
    assert_ne!(region, untouched);

    let (tx, rx) = ipc::channel::<IpcSharedMemory>().unwrap();
    tx.send(region.clone()).unwrap();
    let received = rx.recv().unwrap();
    assert_eq!((received[0], received[8191], received.len()), (1, 2, 8192));
    tx.send(untouched.clone()).unwrap();
    assert!(rx.recv().unwrap().iter().all(|&b| b == 0));
    assert_eq!(region.take().unwrap()[0], 1);

    let mut os_region = OsIpcSharedMemory::from_bytes(b"abc");
    // SAFETY: as above.
    unsafe { os_region.deref_mut()[1] = b'X' };
    assert_eq!(&*os_region, b"aXc");
}

#[test]
fn a_one_shot_route_after_its_handler_and_ipc_channel_style_code_compile_together() {
    // A typical ipc-channel program fragment, unchanged.
    let (tx, rx) = ipc::channel::<String>().unwrap();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    ROUTER.add_typed_one_shot_route(rx, Box::new(move |message| done_tx.send(message.unwrap()).unwrap()));
    tx.send("once".into()).unwrap();
    assert_eq!(done_rx.recv().unwrap(), "once");
    tx.send("this send should succeed but no handler should run".into()).unwrap();
}
