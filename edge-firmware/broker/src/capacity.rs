//! Build-time capacities of the firmware broker, and what each costs in RAM.
//!
//! Eight clients, 64 subscriptions, 32 retained messages and 2 KiB packets, plus
//! [`SPARE_SOCKETS`] sockets beyond the client limit. embassy-net has no listen backlog: a
//! client that connects while no socket is listening gets a TCP reset, so spare sockets
//! keep listening when every client slot is taken (the extra client then gets a CONNACK
//! refusal it can read) and while an old socket is still closing (a client reconnecting at
//! once gets in).
//!
//! | state | capacity | RAM (bytes, approx.) |
//! |---|---:|---:|
//! | the broker (all of the below; with persistence 512 more) | | 31 040 |
//! | connections | [`SOCKETS`] | 10 × 136 |
//! | sessions | [`SESSIONS`]: the clients' and the uplink's bridge | (8 + 1) × 224 |
//! | queue entries / control packets waiting to be sent | 64 / [`CONTROLS`] ([`CONTROLS_PER_CONNECTION`] each) | 64 × 48 + 40 × 28 |
//! | subscriptions / trie nodes and their levels' text | [`SUBSCRIPTIONS`] / 96 | 64 × 32 + 96 × 32 + 1 152 |
//! | hash indexes: the router's children and subscriptions, its subscribing sessions, client ids, retained topics | 2 × 128, 16, 16, 64 places | 8 per place |
//! | message bytes (topics, payloads, properties) | 8 KiB | 8 192 |
//! | per socket: TCP rings + inbox | [`SOCKET_RX`] + [`SOCKET_TX`] + [`INBOX`] | 10 × 640 (`lean-sockets`: 9 × 512) |
//! | shared buffer for larger received packets | [`LARGE_BUFFERS`] × [`PACKET`] | 1 × 2 048 |
//! | the uplink (feature `uplink`): TCP rings + inbox | [`SOCKET_RX`] + [`UPLINK_TX`] + [`INBOX`] | 2 688 |
//!
//! `cargo xtask size` measures the whole firmware (README, "Firmware").

use fulmar_core::broker::Config;

/// Clients that can hold a session at once.
pub const CLIENTS: usize = 8;
/// Bridges to an upstream broker (`uplink`): each is a session beside the clients' and a
/// TCP socket beside the listening ones.
pub const UPLINKS: usize = if cfg!(feature = "uplink") { 1 } else { 0 };
/// embassy-net socket slots the uplink takes: each bridge's TCP socket, and the stack's
/// DNS socket (the `upstream` host may be a name) when there is a bridge.
pub const UPLINK_SOCKETS: usize = if cfg!(feature = "uplink") {
    UPLINKS + 1
} else {
    0
};
/// Sessions: the clients' and the bridges'.
pub const SESSIONS: usize = CLIENTS + UPLINKS;
/// Sockets listening beyond [`CLIENTS`] (see the module documentation): two, so that a
/// client refused over the limit and one reconnecting at the same moment both find a
/// listening socket. One with `lean-sockets` (each socket is 1.4 KB of RAM with its task,
/// smoltcp slot and broker connection): the second of two such events at once then gets a
/// TCP reset while the first one's socket closes, and its client tries again.
pub const SPARE_SOCKETS: usize = if cfg!(feature = "lean-sockets") { 1 } else { 2 };
/// TCP sockets, and so broker connections and socket tasks.
pub const SOCKETS: usize = CLIENTS + SPARE_SOCKETS;
/// Subscriptions, all clients together.
pub const SUBSCRIPTIONS: usize = 64;
/// Retained messages.
pub const RETAINED: usize = 32;
/// Largest MQTT packet in either direction.
pub const PACKET: usize = 2048;
/// TCP receive ring of each socket: the window a client may send ahead. 256 bytes (a few
/// small PUBLISHes): `fulmar bench` on the QEMU board measured it within the noise of 512.
/// 128 with `lean-sockets` (128 bytes less per socket): a client then sends one or two
/// small PUBLISHes per round trip (about 0.6 MB/s per client on a LAN's 0.2 ms) and a
/// larger packet in 128-byte steps, each waiting for the firmware's window update (sent at
/// once when a full window is read). The uplink's receive ring is the same size: what comes
/// down from upstream comes in steps of it too.
pub const SOCKET_RX: usize = if cfg!(feature = "lean-sockets") {
    128
} else {
    256
};
/// Each socket's own buffer for received bytes the core has not consumed yet (a packet not
/// complete yet, or one held back by backpressure). Most packets fit (a CONNECT, a
/// SUBSCRIBE, an acknowledgment, a sensor reading with its topic); a larger one is
/// assembled in one of the [`LARGE_BUFFERS`] shared buffers. 128 bytes rather than 256 saves
/// 128 bytes per socket; packets of 129 to 256 bytes then share the large buffer too.
pub const INBOX: usize = 128;
/// Buffers of [`PACKET`] bytes shared by all sockets, each lent to one socket while a
/// packet larger than [`INBOX`] arrives. A socket that needs one while all are lent stops
/// reading (TCP slows its client down) until one comes back. One: a packet is consumed as
/// soon as its last byte arrives, so on a LAN a buffer is lent for a few milliseconds; a
/// second one would cost 2 KiB of RAM, the margin between this firmware and its 48 KiB
/// goal. A client that trickles a large packet holds it at most `inbox::LARGE_HOLD`.
pub const LARGE_BUFFERS: usize = 1;
/// TCP transmit ring of each socket. The core writes a PUBLISH into it in pieces
/// (`Broker::poll_transmit_pieces`), so it need not hold a whole packet: only the largest
/// control packet (acknowledgments, CONNACK, SUBACK: a few dozen bytes; a SUBACK answers
/// each filter of its SUBSCRIBE with a byte, so a client that sends over 250 filters in one
/// packet is closed rather than answered).
pub const SOCKET_TX: usize = 256;
/// TCP transmit ring of the uplink's socket: it writes each PUBLISH whole, so it holds
/// the largest one (a message of at most [`PACKET`] bytes as published, plus a margin for
/// a longer packet identifier and topic framing): at least `PACKET` and
/// `fulmar_core::uplink::PUBLISH_MARGIN`, what the client needs free to take a message.
pub const UPLINK_TX: usize = PACKET + 256;
/// Control packets waiting to be sent (acknowledgments, PINGRESP, SUBACK...), all
/// connections together.
pub const CONTROLS: usize = 40;
/// Control packets one connection may have waiting before its input stops being consumed
/// (`Config::max_pending_controls`): its share of [`CONTROLS`], less one for the DISCONNECT
/// that may come when it closes, so a client that publishes at QoS 1 or 2 without reading
/// never takes another's room (TCP holds it back instead).
pub const CONTROLS_PER_CONNECTION: usize = CONTROLS / SOCKETS - 1;
const _: () = assert!(
    CONTROLS_PER_CONNECTION >= 1,
    "too few control packets per socket"
);
/// Largest Ethernet frame the QEMU board's driver sends or takes (without FCS; the
/// NUCLEO-H743ZI's, embassy-stm32's, has Ethernet's own 1 514 bytes): 576 bytes of IP
/// (the size every IPv4 host must accept, RFC 791) plus the 14-byte header. Not Ethernet's
/// 1 500: the sockets' TCP rings are a few hundred bytes each way, so their segments are no
/// larger than the 536-byte MSS this gives anyway, and every frame buffer is 0.9 KB
/// smaller. Larger frames (never TCP, which keeps to the MSS) are dropped.
pub const ETHERNET_MTU: usize = 576 + 14;
/// The MQTT port.
pub const MQTT_PORT: u16 = 1883;
/// Durable changes the broker can report between two runs of the persistence task (more
/// and it asks for everything to be written again); none without persistence.
pub const PENDING_CHANGES: usize = if cfg!(feature = "persistence") { 16 } else { 0 };

fulmar_core::fixed_broker_storage! {
    /// The firmware broker's storage: [`SOCKETS`] connections, [`SESSIONS`] sessions,
    /// [`SUBSCRIPTIONS`] subscriptions over 96 trie nodes (filters share their first
    /// levels) whose levels' text shares 1 152 bytes (12 per node on average), client
    /// identifiers up to 32 bytes, 64 messages (the 32
    /// retained plus 32 queued or held as wills) over 8 KiB, queues of 64 entries in all.
    /// No room to hold a CONNECT during enhanced authentication: the firmware's hooks
    /// (`AllowAll`) offer none, so such a CONNECT is refused before it would be held.
    pub struct Storage {
        connections: SOCKETS, sessions: SESSIONS, subscriptions: SUBSCRIPTIONS,
        topic_nodes: 96, share_groups: 4, text: 32, messages: 64, queue: 64,
        controls: CONTROLS, inbound: 16, aliases: 16, retained: RETAINED, blob_bytes: 8192,
        slots: 128, pending: PENDING_CHANGES, auth_scratch: 0,
    }
}

/// The broker configuration that matches [`Storage`]: limits reached through the
/// protocol's own answers (CONNACK refusals, quota reason codes) before storage runs out.
pub fn config() -> Config {
    Config {
        max_connections: SOCKETS,
        max_clients: CLIENTS,
        max_sessions: SESSIONS,
        max_packet_size: PACKET as u32,
        max_subscriptions_per_client: 16,
        max_inflight: 4,
        max_pending_controls: CONTROLS_PER_CONNECTION,
        receive_maximum: 2,
        max_queued_messages: 8,
        max_queued_bytes: 4096,
        max_retained: RETAINED,
        max_retained_bytes: 4096,
        topic_alias_maximum: 2,
        ..Config::default()
    }
}
