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
fn one_shot_route_gets_only_the_first_message_and_later_sends_still_succeed() {
    let (tx, rx) = ipc::channel::<String>().unwrap();
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    let handler: TypedRouterOneShotHandler<String> = Box::new(move |value| seen_tx.send(value.unwrap()).unwrap());
    ROUTER.add_typed_one_shot_route(rx, handler);
    tx.send("first".into()).unwrap();
    assert_eq!(seen_rx.recv_timeout(Duration::from_secs(10)).unwrap(), "first");
    // The handler is gone after its one call (its crossbeam sender with it)...
    assert!(seen_rx.recv_timeout(Duration::from_secs(10)).is_err());
    // ...but the receiver stays registered and discards what comes later, as in ipc-channel:
    // 1 MiB in all, far beyond the channel's buffer, so these sends succeed only if the router
    // keeps reading and dropping them.
    let filler = "x".repeat(4096);
    for _ in 0..256 {
        tx.send(filler.clone()).expect("a send after the one-shot handler ran must succeed");
    }
}

#[test]
fn a_panicking_handler_costs_only_its_own_route() {
    let router = RouterProxy::new();
    let (panicky_tx, panicky_rx) = ipc::channel::<u8>().unwrap();
    let (steady_tx, steady_rx) = ipc::channel::<u8>().unwrap();
    let (about_to_panic_tx, about_to_panic) = crossbeam_channel::unbounded();
    router.add_typed_route(
        panicky_rx,
        Box::new(move |_| {
            about_to_panic_tx.send(()).unwrap();
            panic!("a handler panics (this panic is expected by the test)");
        }),
    );
    let steady = router.route_ipc_receiver_to_new_crossbeam_receiver(steady_rx);
    panicky_tx.send(1).unwrap();
    about_to_panic.recv_timeout(Duration::from_secs(10)).unwrap();
    // Sent after the panic began, so the router reads it in a later round than the panicking
    // message: once it arrives, the router has survived and dropped the panicking route.
    steady_tx.send(2).unwrap();
    assert_eq!(steady.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
    assert!(
        matches!(panicky_tx.send(3), Err(ipc::IpcError::Disconnected)),
        "the panicking route's receiver must be closed"
    );
    steady_tx.send(4).unwrap();
    assert_eq!(steady.recv_timeout(Duration::from_secs(10)).unwrap(), 4);
    router.shutdown();
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

#[test]
fn a_handler_may_shut_down_its_own_router() {
    let router = Arc::new(RouterProxy::new());
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let inner = router.clone();
    router.add_typed_route(
        rx,
        Box::new(move |_| {
            inner.shutdown(); // on the router thread: must not wait for itself
            done_tx.send(()).unwrap();
        }),
    );
    tx.send(1).unwrap();
    done_rx.recv_timeout(Duration::from_secs(10)).expect("the handler returned from shutdown");
    router.shutdown(); // already shut down: returns at once
}
