//! The router: callbacks and crossbeam forwarding, handler drop on disconnection, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossproc::ipc;
use crossproc::router::{RouterProxy, TypedRouterMultiHandler, TypedRouterOneShotHandler, ROUTER};

/// Sets its flag when dropped, so a test can see that the router dropped a handler.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn typed_route_sees_every_message_and_is_dropped_on_disconnect() {
    let router = RouterProxy::new();
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let handler: TypedRouterMultiHandler<u32> = Box::new(move |value| {
        let _keep = &flag;
        seen_tx.send(value.unwrap()).unwrap();
    });
    router.add_typed_route(rx, handler);
    for i in 0..10 {
        tx.send(i).unwrap();
    }
    for i in 0..10 {
        assert_eq!(seen_rx.recv_timeout(Duration::from_secs(10)).unwrap(), i);
    }
    drop(tx);
    // The handler (and the crossbeam sender it owns) goes away once the channel closes.
    assert!(seen_rx.recv_timeout(Duration::from_secs(10)).is_err());
    assert!(dropped.load(Ordering::SeqCst));
    router.shutdown();
    router.shutdown();
}

#[test]
fn one_shot_route_gets_only_the_first_message() {
    let (tx, rx) = ipc::channel::<String>().unwrap();
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    let handler: TypedRouterOneShotHandler<String> = Box::new(move |value| seen_tx.send(value.unwrap()).unwrap());
    ROUTER.add_typed_one_shot_route(rx, handler);
    tx.send("first".into()).unwrap();
    assert_eq!(seen_rx.recv_timeout(Duration::from_secs(10)).unwrap(), "first");
    // The handler is gone after its one call, and the receiver was closed.
    assert!(seen_rx.recv_timeout(Duration::from_secs(10)).is_err());
    let closed = (0..1000).any(|_| {
        std::thread::sleep(Duration::from_millis(5));
        tx.send("second".into()).is_err()
    });
    assert!(closed, "the one-shot route's receiver must be closed after its message");
}

#[test]
fn receivers_route_into_crossbeam_channels() {
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let (cb_tx, cb_rx) = crossbeam_channel::unbounded();
    ROUTER.route_ipc_receiver_to_crossbeam_sender(rx, cb_tx);
    tx.send(1).unwrap();
    assert_eq!(cb_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);

    let (tx2, rx2) = ipc::channel::<u8>().unwrap();
    let cb_rx2 = ROUTER.route_ipc_receiver_to_new_crossbeam_receiver(rx2);
    tx2.send(2).unwrap();
    assert_eq!(cb_rx2.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
    drop(tx2);
    assert!(cb_rx2.recv_timeout(Duration::from_secs(10)).is_err());
}

#[test]
fn routes_added_after_shutdown_are_ignored() {
    let router = RouterProxy::new();
    router.shutdown();
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let received = router.route_ipc_receiver_to_new_crossbeam_receiver(rx);
    let _ = tx.send(1);
    // The route was refused: its handler (and crossbeam sender) was dropped at once.
    assert!(received.recv_timeout(Duration::from_secs(5)).is_err());
}
