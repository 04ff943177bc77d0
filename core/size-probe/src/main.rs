//! The smallest firmware that carries the whole fulmar-core broker, for `cargo xtask size`.
//!
//! It runs nowhere: it exists so the linker keeps exactly what a firmware broker needs and
//! `llvm-size` can report flash and static RAM for a Cortex-M4F (`thumbv7em-none-eabihf`).
//! `main` drives a `static` broker (built by the compiler with `Broker::unconfigured`,
//! all zero bytes, so it sits in `.bss` and is never copied through the stack; configured
//! and seeded at run time) the way a firmware's network task does: accept a connection,
//! feed received bytes to `handle_bytes`, drain `poll_event` and `poll_transmit`, close
//! what must be closed, and call `handle_timeout` at `poll_timeout`. The received bytes (CONNECT, SUBSCRIBE, PUBLISH, PUBACK, PINGREQ,
//! DISCONNECT) pass through `black_box`, so the compiler must assume any packet of any
//! version can arrive and keeps every decoder and handler.
//!
//! ## Capacities (the [`Probe`] storage)
//! The target is 8 clients, 64 subscriptions, 32 retained messages and 2 KiB packets:
//! - `connections: 8`, `sessions: 8`: one connection and one session per client
//!   (`Config::max_connections`/`max_clients`/`max_sessions` agree).
//! - `subscriptions: 64`, `topic_nodes: 96`: filters share their first levels
//!   (`site/+/temp`, `site/+/hum`), so 1.5 levels per filter is generous; `share_groups: 4`.
//! - `text: 32`: topic levels, share names, client identifiers and user names up to 32
//!   bytes (the specification only promises 23 for client identifiers).
//! - `retained: 32`; `messages: 64`: the 32 retained plus 32 in queues and wills.
//! - `queue: 64` entries across all sessions (8 per client on average), `controls: 32`
//!   (4 acknowledgments waiting per connection), `inbound: 16` QoS 2 identifiers awaiting
//!   PUBREL (`Config::receive_maximum: 2` per client), `aliases: 16` (`topic_alias_maximum: 2`).
//! - `blob_bytes: 8192`: topics, properties and payloads of every stored message; with
//!   `max_packet_size: 2048` it always holds a maximum-size message plus small ones.
//! - `slots: 128`: each hash index (a power of two above 8/7 of the 96 nodes).
//! - `pending: 16` persistence markers and `auth_scratch: 256` bytes for a CONNECT held
//!   during enhanced authentication.
//!
//! The 2 KiB receive and transmit buffers are statics here too: a firmware needs them.
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use fulmar_core::broker::{AllowAll, Broker, Config, Event};
use fulmar_core::time::{Duration, Instant};

/// Largest packet in either direction.
const PACKET: usize = 2048;

fulmar_core::fixed_broker_storage! {
    /// Eight clients, 64 subscriptions, 32 retained messages, 2 KiB packets.
    pub struct Probe {
        connections: 8, sessions: 8, subscriptions: 64, topic_nodes: 96,
        share_groups: 4, text: 32, messages: 64, queue: 64, controls: 32,
        inbound: 16, aliases: 16, retained: 32, blob_bytes: 8192, slots: 128,
        pending: 16, auth_scratch: 256,
    }
}

/// What a client sends, MQTT 3.1.1: CONNECT ("probe", keep alive 60 s), SUBSCRIBE
/// `sensors/+/temp` at QoS 1, a retained QoS 1 PUBLISH to `sensors/a/temp`, the PUBACK of
/// the copy it gets back, PINGREQ and DISCONNECT.
static INPUT: [u8; 72] = *b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05probe\
\x82\x13\x00\x01\x00\x0esensors/+/temp\x01\
\x33\x16\x00\x0esensors/a/temp\x00\x02\x32\x31\x2e\x35\
\x40\x02\x00\x01\
\xc0\x00\
\xe0\x00";

fn config() -> Config {
    Config {
        max_connections: 8,
        max_clients: 8,
        max_sessions: 8,
        max_packet_size: PACKET as u32,
        max_subscriptions_per_client: 16,
        max_inflight: 4,
        receive_maximum: 2,
        max_queued_messages: 8,
        max_queued_bytes: 4096,
        max_retained: 32,
        max_retained_bytes: 4096,
        topic_alias_maximum: 2,
        ..Config::default()
    }
}

#[entry]
fn main() -> ! {
    // cortex-m-rt turns these into `&'static mut` references: statics without `unsafe`.
    // The broker is built at compile time by `Broker::unconfigured`, all zero bytes: it
    // lands in .bss (no image in flash) and is never built on the stack. Its
    // configuration and seed come at run time.
    static mut BROKER: Broker<Probe> = Broker::unconfigured(AllowAll);
    static mut RX: [u8; PACKET] = [0; PACKET];
    static mut TX: [u8; PACKET] = [0; PACKET];

    let broker = BROKER;
    broker.configure(config(), black_box(0x5EED));
    let mut now = Instant::ZERO;
    loop {
        if let Ok(conn) = broker.handle_connect(now) {
            // Opaque to the optimiser: as if the bytes came from the network.
            let input: &[u8] = black_box(&INPUT[..]);
            let len = input.len().min(RX.len());
            RX[..len].copy_from_slice(&input[..len]);
            black_box(broker.handle_bytes(conn, &RX[..len], now));
        }
        while let Some(event) = broker.poll_event() {
            match event {
                Event::Transmit(conn) => loop {
                    // The transmit buffer holds the largest packet this build accepts; a
                    // packet that does not fit waits for the client to drain.
                    match broker.poll_transmit(conn, TX, now) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => black_box(&TX[..n]),
                    };
                },
                Event::Connected(conn) | Event::Resume(conn) => {
                    black_box(conn);
                }
                Event::Close(conn, reason) => {
                    black_box(reason);
                    broker.handle_disconnect(conn, now);
                }
            }
        }
        now = broker
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1));
        broker.handle_timeout(now);
        black_box(broker.stats());
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // A firmware would log and reset; the probe only needs the handler to exist.
    loop {
        core::hint::spin_loop();
    }
}
