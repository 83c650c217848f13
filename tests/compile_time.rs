//! Compile-time facts a program written against `ipc-channel` 0.21–0.23 may depend on: variance,
//! auto traits (positive and negative), `PartialEq` on `platform::OsIpcReceiver` and the error
//! chain of `SerDeError`. A fact that stops holding fails the build of this file (or, for the
//! error chain, its test).

use std::error::Error;

use crossproc::ipc::{IpcBytesReceiver, IpcMessage, IpcOneShotServer, IpcReceiver, IpcSender};
use crossproc::{platform, SerDeError};

/// Fails to compile when `$type` implements `Sync`: with `Sync`, both impls of the probe trait
/// apply and the call's type parameter cannot be inferred.
macro_rules! assert_not_sync {
    ($type:ty) => {
        const _: fn() = || {
            trait Probe<Which> {
                fn probe() {}
            }
            impl<T: ?Sized> Probe<()> for T {}
            struct IfSync;
            impl<T: ?Sized + Sync> Probe<IfSync> for T {}
            <$type as Probe<_>>::probe();
        };
    };
}

// One consumer per channel: receivers move between threads but are never shared.
assert_not_sync!(IpcReceiver<u8>);
assert_not_sync!(IpcBytesReceiver);
assert_not_sync!(platform::OsIpcReceiver);

fn send_sync<T: Send + Sync>() {}
fn partial_eq<T: PartialEq>() {}

/// `IpcSender<T>` is covariant in `T`, as ipc-channel's (`PhantomData<T>`).
#[allow(dead_code)]
fn sender_is_covariant<'a>(sender: IpcSender<&'static str>) -> IpcSender<&'a str> {
    sender
}

/// `IpcReceiver<T>` is covariant in `T`, as ipc-channel's.
#[allow(dead_code)]
fn receiver_is_covariant<'a>(receiver: IpcReceiver<&'static str>) -> IpcReceiver<&'a str> {
    receiver
}

/// `IpcOneShotServer<T>` is covariant in `T`, as ipc-channel's.
#[allow(dead_code)]
fn one_shot_server_is_covariant<'a>(server: IpcOneShotServer<&'static str>) -> IpcOneShotServer<&'a str> {
    server
}

#[test]
fn auto_traits_match_ipc_channel() {
    // Senders are shared by many producers, whatever `T` is (a superset of ipc-channel, where
    // `T` must be `Send + Sync` too).
    send_sync::<IpcSender<std::rc::Rc<u8>>>();
    // One-shot servers are `Send + Sync` (ipc-channel's: when `T` is).
    send_sync::<IpcOneShotServer<u8>>();
    send_sync::<IpcOneShotServer<IpcSender<u8>>>();
    send_sync::<platform::OsIpcOneShotServer>();
}

#[test]
fn os_receivers_compare_as_ipc_channel_windows_ones() {
    partial_eq::<platform::OsIpcReceiver>();
    let (_tx, rx) = platform::channel().unwrap();
    let (_other_tx, other) = platform::channel().unwrap();
    assert!(rx == rx);
    assert!(rx != other);
    let (live, other_live) = (rx.consume(), other.consume());
    assert!(live != rx, "a consumed receiver is not the one it gave its channel to");
    assert!(live != other_live);
    assert!(rx == other, "two empty receivers compare equal, as two invalid handles do");
}

#[test]
fn a_serde_error_has_postcard_as_its_source_and_says_it_once() {
    let error: SerDeError = IpcMessage::from_data(vec![0xff]).to::<u32>().unwrap_err();
    let source = error.source().expect("the postcard error is the source");
    assert!(source.downcast_ref::<postcard::Error>().is_some(), "{source:?}");
    let postcard_text = source.to_string();
    assert!(!error.to_string().contains(&postcard_text), "{error} repeats {postcard_text}");

    // The chain an error reporter prints names each text once.
    let ipc_error = crossproc::IpcError::SerializationError(error);
    let mut chain = vec![ipc_error.to_string()];
    let mut next = ipc_error.source();
    while let Some(error) = next {
        chain.push(error.to_string());
        next = error.source();
    }
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert_eq!(chain.iter().filter(|text| text.contains(&postcard_text)).count(), 1, "{chain:?}");
}
