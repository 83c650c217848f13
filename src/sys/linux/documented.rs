//! The Linux numbers README.md, docs/behaviour.md, docs/ring.md and SECURITY.md state, checked
//! against the constants that define them: change a constant and this test names the sentence to change with it.

use super::frame::{INLINE_MAX, MAX_BUFFER_CLAIM, MAX_HANDLES_IN_PACKET};
use super::inflight::QUEUED_CAP;
use super::intake::{MAPPED_BUDGET, MAPS_PER_RECEIVER};
use super::pool::{MAX_ENTRIES, MAX_RETAINED};
use super::ring::{RING_AFTER, RING_BYTES, RING_MESSAGE_MAX, SLOTS};
use super::select::AWAKE_MAX;
use super::server::{MAX_WAITING, SILENT_DEADLINE};
use super::socket::AT_THE_LIMIT;
use crate::sys::MESSAGES_PER_RECEIVER;

const README: &str = include_str!("../../../README.md");
const BEHAVIOUR: &str = include_str!("../../../docs/behaviour.md");
const RING: &str = include_str!("../../../docs/ring.md");
const SECURITY: &str = include_str!("../../../SECURITY.md");

/// Asserts that `doc` (named `name`) says `phrase`, whatever the line breaks.
fn says(name: &str, doc: &str, phrase: &str) {
    let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat(doc).contains(&flat(phrase)), "{name} must say {phrase:?}");
}

#[test]
fn the_docs_state_the_linux_backends_numbers() {
    let kib = |bytes: usize| bytes >> 10;
    let mib = |bytes: usize| bytes >> 20;
    says("README.md", README, &format!("up to {MAX_HANDLES_IN_PACKET} channels and regions with the message itself"));
    says(
        "SECURITY.md",
        SECURITY,
        &format!("more than {MAX_HANDLES_IN_PACKET} channels and regions sends them on a side socket"),
    );
    says("README.md", README, &format!("payloads over {} KiB travel in a memfd", kib(INLINE_MAX)));
    says(
        "docs/behaviour.md",
        BEHAVIOUR,
        &format!("Payloads over {} KiB travel in a memfd and claim {} KiB", kib(INLINE_MAX), kib(MAX_BUFFER_CLAIM)),
    );
    says(
        "SECURITY.md",
        SECURITY,
        &format!("{} KiB unless it reuses one of the sender's few kept memfds", kib(MAX_BUFFER_CLAIM)),
    );
    says(
        "docs/behaviour.md",
        BEHAVIOUR,
        &format!("at most {MESSAGES_PER_RECEIVER} messages from one receiver per call"),
    );
    says("SECURITY.md", SECURITY, &format!("reads at most {MESSAGES_PER_RECEIVER} messages per receiver per call"));
    says("SECURITY.md", SECURITY, &format!("the last {MAPS_PER_RECEIVER} payload memfds each channel was sent"));
    says(
        "SECURITY.md",
        SECURITY,
        &format!("none over {} MiB, at most {} MiB per process", mib(MAX_RETAINED), mib(MAPPED_BUDGET)),
    );
    says("README.md", README, &format!("a message of up to {} KiB that carries no channel", kib(RING_MESSAGE_MAX)));
    says("docs/ring.md", RING, &format!("messages of up to {} KiB without channels or regions", kib(RING_MESSAGE_MAX)));
    says("docs/ring.md", RING, &format!("ring holds up to {} KiB of messages", kib(RING_BYTES)));
    says("README.md", README, &format!("once a channel has carried {RING_AFTER} messages"));
    says("docs/ring.md", RING, &format!("once its receiver has taken {RING_AFTER} messages from the socket"));
    says("docs/ring.md", RING, &format!("The ring comes with the {RING_AFTER}th message"));
    says("docs/ring.md", RING, &format!("{SLOTS} processes can write in one channel's ring at once"));
    says("docs/ring.md", RING, &format!("keeps the rings of the {AWAKE_MAX} members it drained most recently awake"));
    says("SECURITY.md", SECURITY, &format!("the {} KiB ring limit", kib(RING_MESSAGE_MAX)));
    says("SECURITY.md", SECURITY, &format!("take all {SLOTS} writer slots"));
    says("README.md", README, &format!("2 once its channel carried {RING_AFTER} small messages"));
    says("README.md", README, &format!("at most {QUEUED_CAP} per process (an eighth of the soft `RLIMIT_NOFILE`)"));
    says(
        "README.md",
        README,
        &format!("at most {MAX_ENTRIES} per channel, and per process an eighth of the soft limit"),
    );
    says("README.md", README, &format!("a message with more than {MAX_HANDLES_IN_PACKET} descriptors"));
    says("README.md", README, &format!("at most {MAX_WAITING} silent ones"));
    says("README.md", README, &format!("while this process has fewer than {AT_THE_LIMIT} free fails"));
    says("docs/behaviour.md", BEHAVIOUR, &format!("is at its limit (fewer than {AT_THE_LIMIT} descriptors free)"));
    says("SECURITY.md", SECURITY, &format!("at its limit (fewer than {AT_THE_LIMIT} descriptors free)"));
    let deadline = SILENT_DEADLINE.as_secs();
    says("SECURITY.md", SECURITY, &format!("for at most {deadline} s, and at most {MAX_WAITING} such clients"));
}
