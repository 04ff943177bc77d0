//! The memory a [`super::Broker`] runs in: [`BrokerStorage`] names a store for each kind of
//! state. [`fixed_broker_storage!`](crate::fixed_broker_storage) declares a fixed-capacity
//! one (no allocator; every capacity a build-time constant) and `Growable` (feature
//! `alloc`) grows on demand. The algorithms are the same for both.

use super::connection::{Alias, Connection};
use super::message::Message;
use super::persistence::PendingChange;
use super::transmit::Control;
use crate::blob::BlobStore;
use crate::router::{Delivery, RouterStorage, Slot};
use crate::session::{InboundId, QueueEntry, Session};
use crate::storage::{Entry, Storage, Text};

/// A store for every kind of broker state.
pub trait BrokerStorage {
    /// The router's stores.
    type Router: RouterStorage;
    /// Client identifiers and user names.
    type Text: Text;
    /// Message bytes.
    type Blobs: BlobStore;
    /// Transport connections.
    type Connections: Storage<Entry<Connection>>;
    /// Sessions.
    type Sessions: Storage<Entry<Session<Self::Text>>>;
    /// Stored messages.
    type Messages: Storage<Entry<Message>>;
    /// Queue entries of all sessions.
    type Queue: Storage<Entry<QueueEntry>>;
    /// Control packets waiting to be sent, of all connections.
    type Controls: Storage<Entry<Control>>;
    /// QoS 2 packet identifiers awaiting PUBREL, of all sessions.
    type Inbound: Storage<Entry<InboundId>>;
    /// Topic aliases of all connections.
    type Aliases: Storage<Entry<Alias>>;
    /// Retained messages (message handles).
    type Retained: Storage<Entry<u32>>;
    /// The hash index of client identifiers (one entry per session).
    type ClientSlots: Storage<Slot>;
    /// The hash index of retained topics (one entry per retained message).
    type RetainedSlots: Storage<Slot>;
    /// Scratch list of the sessions one message goes to (at most one per subscription).
    type Deliveries: Storage<Delivery>;
    /// Changes not yet reported through `Broker::poll_persist`.
    type Pending: Storage<Entry<PendingChange>>;
    /// Room to re-read a CONNECT held during enhanced authentication.
    type Scratch: Storage<u8>;
}

/// Declares a fixed-capacity [`BrokerStorage`] type: no allocator, every capacity chosen
/// at build time.
///
/// ```
/// fulmar_core::fixed_broker_storage! {
///     /// Eight clients on a microcontroller.
///     pub struct Tiny {
///         connections: 10, sessions: 8, subscriptions: 64, topic_nodes: 128,
///         share_groups: 4, text: 32, messages: 64, queue: 64, controls: 32,
///         inbound: 32, aliases: 16, retained: 32, blob_bytes: 8192, slots: 256,
///     }
/// }
/// let broker = fulmar_core::broker::Broker::<Tiny>::new(Default::default(), 1);
/// ```
/// `slots` (a power of two) sizes the router's indexes of children and subscriptions, and
/// must exceed 8/7 of the larger of `topic_nodes` and `subscriptions`; the router's index of
/// subscribing sessions and the broker's indexes of client identifiers and retained topics
/// are sized from `sessions` and `retained` (the next power of two above 8/7 of each).
/// `text` bounds client identifiers and share names; the topic levels of all trie nodes
/// share one pool of 12 bytes per node (and at least `text`), so a level may be of any
/// length while the pool has room (a subscription that does not fit is refused with the
/// router's capacity error, SUBACK 0x97 Quota exceeded). An optional last
/// `pending: N` sizes the list of persistence changes not yet polled (default 64; when it
/// overflows, the broker asks the host to rewrite everything instead), and an optional
/// `auth_scratch: N` the largest CONNECT an enhanced authentication can hold (default 512).
#[macro_export]
macro_rules! fixed_broker_storage {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            connections: $connections:expr, sessions: $sessions:expr,
            subscriptions: $subs:expr, topic_nodes: $nodes:expr, share_groups: $groups:expr,
            text: $text:expr, messages: $messages:expr, queue: $queue:expr,
            controls: $controls:expr, inbound: $inbound:expr, aliases: $aliases:expr,
            retained: $retained:expr, blob_bytes: $bytes:expr, slots: $slots:expr
            $(, pending: $pending:expr)? $(, auth_scratch: $scratch:expr)? $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name;

        impl $crate::broker::BrokerStorage for $name {
            // The index of subscribing sessions holds at most one place per session (peers
            // and bridges are sessions too).
            type Router = $crate::router::Fixed<
                $nodes, $subs, $groups, $slots, $text,
                { (($sessions as usize) * 8 / 7 + 1).next_power_of_two() },
                // Topic levels average far less than `text` bytes: 12 per node, and room for
                // at least one of the longest.
                { if ($nodes as usize) * 12 > ($text as usize) { ($nodes as usize) * 12 } else { $text as usize } },
            >;
            type Text = $crate::__private::heapless::String<$text>;
            type Blobs = $crate::blob::FixedBlobs<$bytes, $messages>;
            type Connections = $crate::__private::heapless::Vec<
                $crate::storage::Entry<$crate::broker::Connection>, $connections>;
            type Sessions = $crate::__private::heapless::Vec<
                $crate::storage::Entry<$crate::session::Session<Self::Text>>, $sessions>;
            type Messages = $crate::__private::heapless::Vec<
                $crate::storage::Entry<$crate::broker::Message>, $messages>;
            type Queue = $crate::__private::heapless::Vec<
                $crate::storage::Entry<$crate::session::QueueEntry>, $queue>;
            type Controls = $crate::__private::heapless::Vec<
                $crate::storage::Entry<$crate::broker::Control>, $controls>;
            type Inbound = $crate::__private::heapless::Vec<
                $crate::storage::Entry<$crate::session::InboundId>, $inbound>;
            type Aliases = $crate::__private::heapless::Vec<
                $crate::storage::Entry<$crate::broker::Alias>, $aliases>;
            type Retained = $crate::__private::heapless::Vec<$crate::storage::Entry<u32>, $retained>;
            // A fixed index takes up to 7/8 of its places.
            type ClientSlots = $crate::__private::heapless::Vec<
                $crate::router::Slot, { (($sessions as usize) * 8 / 7 + 1).next_power_of_two() }>;
            type RetainedSlots = $crate::__private::heapless::Vec<
                $crate::router::Slot, { (($retained as usize) * 8 / 7 + 1).next_power_of_two() }>;
            type Deliveries = $crate::__private::heapless::Vec<$crate::router::Delivery, $subs>;
            // Persistence changes waiting for the host: 64 unless `pending` says otherwise.
            type Pending = $crate::__private::heapless::Vec<
                $crate::storage::Entry<$crate::broker::PendingChange>,
                { 64 $(* 0 + $pending)? },
            >;
            // A CONNECT held for enhanced authentication: 512 bytes unless said otherwise.
            type Scratch = $crate::__private::heapless::Vec<u8, { 512 $(* 0 + $scratch)? }>;
        }
    };
}

/// Everything on the heap, growing on demand (`alloc` feature).
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct Growable;

#[cfg(feature = "alloc")]
impl BrokerStorage for Growable {
    type Router = crate::router::Growable;
    type Text = alloc::boxed::Box<str>;
    type Blobs = crate::blob::GrowableBlobs;
    type Connections = alloc::vec::Vec<Entry<Connection>>;
    type Sessions = alloc::vec::Vec<Entry<Session<Self::Text>>>;
    type Messages = alloc::vec::Vec<Entry<Message>>;
    type Queue = alloc::vec::Vec<Entry<QueueEntry>>;
    type Controls = alloc::vec::Vec<Entry<Control>>;
    type Inbound = alloc::vec::Vec<Entry<InboundId>>;
    type Aliases = alloc::vec::Vec<Entry<Alias>>;
    type Retained = alloc::vec::Vec<Entry<u32>>;
    type ClientSlots = alloc::vec::Vec<Slot>;
    type RetainedSlots = alloc::vec::Vec<Slot>;
    type Deliveries = alloc::vec::Vec<Delivery>;
    type Pending = alloc::vec::Vec<Entry<PendingChange>>;
    type Scratch = alloc::vec::Vec<u8>;
}
