//! The subscription router: which sessions a PUBLISH goes to.
//!
//! A trie over topic levels. Each node has literal children (found through a hash index
//! keyed by parent and level text), a `+` child and a `#` child, the plain subscriptions
//! whose filter ends there, and the `$share` groups on that filter. Matching a topic walks
//! only the branches the topic can reach, so its cost follows the number of matches and the
//! topic's depth, not the number of subscriptions.
//!
//! One algorithm, two storage back-ends, chosen by the [`RouterStorage`] parameter:
//! [`Fixed`] (heapless, capacities as const generics, no allocator; a full store answers
//! [`RouterError::Capacity`], which a broker reports as SUBACK 0x97 Quota exceeded) and
//! `Growable` (`alloc` feature; grows on demand).
//!
//! [`Router::route`] reports every matching subscription; [`Router::deliveries`] merges
//! them into what each session should receive: one message per session at the highest
//! granted QoS with all its subscription identifiers ([MQTT-3.3.4-2], [MQTT-3.3.4-4]),
//! plus one message per matching `$share` group to the member the [`ShareStrategy`]
//! picks (§4.8.2).

mod levels;
mod share;
#[cfg(feature = "alloc")]
mod text;

use core::cell::Cell;
use core::fmt;
use core::num::NonZeroU32;

pub use crate::index::Slot;
#[cfg(feature = "alloc")]
pub use levels::InNode;
pub use levels::{LevelPool, LevelStore, Span};
pub use share::ShareStrategy;
#[cfg(feature = "alloc")]
pub use text::CompactText;

use crate::codec::{QoS, SubscriptionOptions};
use crate::index::{Index, hash_key};
use crate::storage::{CapacityError, Entry, Link, Slab, Storage, Text};
use crate::topic::{LEVEL_SEPARATOR, SubscriptionFilter, TopicName};

/// Identifies a session (one client's state) inside a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionId(pub u32);

/// A subscription identifier (MQTT 5.0 §3.8.2.1.2): 1 to 268 435 455.
pub type SubscriptionId = NonZeroU32;

/// Why a subscription could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RouterError {
    /// A fixed-capacity store is full, or a level is longer than the fixed text capacity.
    Capacity,
}

impl From<CapacityError> for RouterError {
    fn from(_: CapacityError) -> Self {
        Self::Capacity
    }
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("subscription capacity exceeded")
    }
}

impl core::error::Error for RouterError {}

/// The memory a [`Router`] keeps its index in.
pub trait RouterStorage {
    /// Owned share names.
    type Text: Text;
    /// The nodes' topic levels.
    type Levels: LevelStore;
    /// Trie nodes.
    type Nodes: Storage<Entry<Node<<Self::Levels as LevelStore>::Level>>>;
    /// Subscriptions.
    type Subs: Storage<Entry<Sub>>;
    /// Shared subscription groups.
    type Groups: Storage<Entry<Group<Self::Text>>>;
    /// The hash indexes of children by level and of subscriptions by session and filter.
    type Slots: Storage<Slot>;
    /// The hash index of each session's first subscription: one place per subscribing
    /// session, so far fewer than [`Self::Slots`] on a broker with few clients.
    type HeadSlots: Storage<Slot>;
}

/// Fixed capacities, no allocator: `NODES` trie nodes (one per distinct filter level),
/// `SUBS` subscriptions, `GROUPS` share groups, `SLOTS` places in the children and
/// subscription indexes (a power of two, at least 8/7 of `max(NODES, SUBS)`), share names
/// of at most `TEXT` bytes, `HEADS` places in the index of subscribing sessions (a power
/// of two, at least 8/7 of the sessions that can subscribe), and `LEVELS` bytes for the
/// text of all topic levels together (a [`LevelPool`]).
#[derive(Debug)]
pub struct Fixed<
    const NODES: usize,
    const SUBS: usize,
    const GROUPS: usize,
    const SLOTS: usize,
    const TEXT: usize,
    const HEADS: usize,
    const LEVELS: usize,
>;

impl<
    const NODES: usize,
    const SUBS: usize,
    const GROUPS: usize,
    const SLOTS: usize,
    const TEXT: usize,
    const HEADS: usize,
    const LEVELS: usize,
> RouterStorage for Fixed<NODES, SUBS, GROUPS, SLOTS, TEXT, HEADS, LEVELS>
{
    type Text = heapless::String<TEXT>;
    type Levels = LevelPool<LEVELS>;
    type Nodes = heapless::Vec<Entry<Node<Span>>, NODES>;
    type Subs = heapless::Vec<Entry<Sub>, SUBS>;
    type Groups = heapless::Vec<Entry<Group<Self::Text>>, GROUPS>;
    type Slots = heapless::Vec<Slot, SLOTS>;
    type HeadSlots = heapless::Vec<Slot, HEADS>;
}

/// Growable storage on the heap (`alloc` feature).
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct Growable;

#[cfg(feature = "alloc")]
impl RouterStorage for Growable {
    type Text = CompactText;
    type Levels = InNode;
    type Nodes = alloc::vec::Vec<Entry<Node<CompactText>>>;
    type Subs = alloc::vec::Vec<Entry<Sub>>;
    type Groups = alloc::vec::Vec<Entry<Group<Self::Text>>>;
    type Slots = alloc::vec::Vec<Slot>;
    type HeadSlots = alloc::vec::Vec<Slot>;
}

/// A trie node: one level of one or more filters (`T`: its level, as the router's
/// [`LevelStore`] keeps it).
#[derive(Debug)]
pub struct Node<T> {
    parent: Link,
    level: T,
    plus: Link,
    hash: Link,
    literal_children: u32,
    subs: Link,
    groups: Link,
}

impl<T> Node<T> {
    /// A node with no child and no subscription yet.
    fn leaf(parent: Link, level: T) -> Self {
        Self {
            parent,
            level,
            plus: Link::NONE,
            hash: Link::NONE,
            literal_children: 0,
            subs: Link::NONE,
            groups: Link::NONE,
        }
    }

    fn is_unused(&self) -> bool {
        self.plus.is_none()
            && self.hash.is_none()
            && self.literal_children == 0
            && self.subs.is_none()
            && self.groups.is_none()
    }
}

/// One subscription: a session, its options and identifier, in a node's or a group's list.
#[derive(Debug)]
pub struct Sub {
    session: SessionId,
    options: SubscriptionOptions,
    identifier: Option<SubscriptionId>,
    /// [`Owner::key`], four bytes where the enum takes eight.
    owner: u32,
    prev: Link,
    next: Link,
    /// The chain of this session's subscriptions (its head is found through an index).
    session_prev: Link,
    session_next: Link,
}

impl Sub {
    fn owner(&self) -> Owner {
        Owner::from_key(self.owner)
    }
}

/// The list a subscription belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Node(u32),
    Group(u32),
}

impl Owner {
    const GROUP_BIT: u32 = 0x8000_0000;

    /// One number for both kinds (handles stay below 2^31: no store holds that many).
    fn key(self) -> u32 {
        match self {
            Self::Node(n) => n,
            Self::Group(g) => g | Self::GROUP_BIT,
        }
    }

    fn from_key(key: u32) -> Self {
        if key & Self::GROUP_BIT == 0 {
            Self::Node(key)
        } else {
            Self::Group(key & !Self::GROUP_BIT)
        }
    }
}

/// A `$share/{name}/{filter}` group at the node of its filter.
#[derive(Debug)]
pub struct Group<T> {
    name: T,
    node: u32,
    /// [`share_key`] of the group: the same in every broker that has it.
    key: u32,
    members: Link,
    count: u32,
    /// The member round-robin picks next.
    next_pick: Cell<Link>,
    prev: Link,
    next: Link,
}

/// One subscription that matched a topic, as reported by [`Router::route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Match {
    /// The subscribing session.
    pub session: SessionId,
    /// The subscription's options.
    pub options: SubscriptionOptions,
    /// The subscription identifier, if the subscriber gave one.
    pub identifier: Option<SubscriptionId>,
    /// Whether the match is the chosen member of a `$share` group.
    pub shared: bool,
}

/// Most subscription identifiers one merged [`Delivery`] carries; further overlapping
/// subscriptions of the same session get their own delivery ([MQTT-3.3.4-5] allows one
/// copy per subscription).
pub const MAX_IDENTIFIERS: usize = 4;

/// What one session receives for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Delivery {
    /// The receiving session.
    pub session: SessionId,
    /// The highest QoS granted by the matching subscriptions ([MQTT-3.3.4-2]); the
    /// message goes out at the lower of this and the publish QoS.
    pub qos: QoS,
    /// Keep the RETAIN flag as published (any matching subscription asked for it).
    pub retain_as_published: bool,
    /// The identifiers of the matching subscriptions ([MQTT-3.3.4-4]).
    pub identifiers: heapless::Vec<SubscriptionId, MAX_IDENTIFIERS>,
    /// Whether this is a `$share` group's copy.
    pub shared: bool,
}

/// What a node of a router on `S` holds for its level.
type Level<S> = <<S as RouterStorage>::Levels as LevelStore>::Level;

/// The subscription index. See the [module documentation](self).
pub struct Router<S: RouterStorage> {
    nodes: Slab<Node<Level<S>>, S::Nodes>,
    levels: S::Levels,
    subs: Slab<Sub, S::Subs>,
    groups: Slab<Group<S::Text>, S::Groups>,
    children: Index<S::Slots>,
    by_session: Index<S::Slots>,
    session_heads: Index<S::HeadSlots>,
    root: Option<u32>,
    seed: u64,
    strategy: ShareStrategy,
    random: Cell<u64>,
}

impl<S: RouterStorage> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("nodes", &self.nodes.len())
            .field("subscriptions", &self.subs.len())
            .field("groups", &self.groups.len())
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl<S: RouterStorage> Router<S> {
    /// An empty router. `seed` should be random per process: it keys the hash indexes
    /// (so clients cannot aim for collisions) and the random share strategy.
    ///
    /// `const`, and all zero bytes apart from `seed` and `strategy`: the root node is
    /// created by the first subscription, so a fixed-capacity router can sit in a
    /// `static`.
    pub const fn new(seed: u64, strategy: ShareStrategy) -> Self {
        Self {
            nodes: Slab::new(),
            levels: S::Levels::EMPTY,
            subs: Slab::new(),
            groups: Slab::new(),
            children: Index::new(),
            by_session: Index::new(),
            session_heads: Index::new(),
            root: None,
            seed,
            strategy,
            random: Cell::new(seed),
        }
    }

    /// Re-keys the hash indexes and the random share strategy, and sets the share
    /// strategy. Only an empty router can be re-keyed (its indexes hold no hash yet): the
    /// answer says whether it was.
    pub fn reset(&mut self, seed: u64, strategy: ShareStrategy) -> bool {
        if !self.subs.is_empty() || self.node_count() > 0 {
            return false;
        }
        self.seed = seed;
        self.random.set(seed);
        self.strategy = strategy;
        true
    }

    /// The root node, created on first use (it holds `#` and `+` at the top level).
    fn root_or_insert(&mut self) -> Result<u32, RouterError> {
        if let Some(root) = self.root {
            return Ok(root);
        }
        let root = self.insert_node(Link::NONE, "")?;
        self.root = Some(root);
        Ok(root)
    }

    /// Number of subscriptions, shared ones included.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Number of trie nodes in use below the root (a measure of memory use; the root,
    /// created by the first subscription, stays).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - usize::from(self.root.is_some())
    }

    /// Adds or replaces `session`'s subscription to `filter`.
    ///
    /// Returns `true` when a subscription to the same filter (and share group) existed and
    /// was replaced ([MQTT-3.8.4-3]); 5.0's Retain Handling 1 depends on that answer.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        filter: &SubscriptionFilter<'_>,
        options: SubscriptionOptions,
        identifier: Option<SubscriptionId>,
    ) -> Result<bool, RouterError> {
        let node = self.node_for(filter)?;
        let owner = match filter.group() {
            None => Owner::Node(node),
            Some(name) => match self.find_group(node, name) {
                Some(group) => Owner::Group(group),
                None => match self.add_group(node, name, share_key(name, filter.filter().as_str()))
                {
                    Ok(group) => Owner::Group(group),
                    Err(e) => {
                        self.prune(node);
                        return Err(e);
                    }
                },
            },
        };
        if let Some(existing) = self.find_sub(owner, session) {
            if let Some(sub) = self.subs.get_mut(existing) {
                sub.options = options;
                sub.identifier = identifier;
            }
            return Ok(true);
        }
        match self.add_sub(owner, session, options, identifier) {
            Ok(()) => Ok(false),
            Err(e) => {
                self.drop_group_if_empty(owner);
                self.prune(node);
                Err(e)
            }
        }
    }

    /// Whether `session` subscribes to `filter` (in the same share group, if shared).
    pub fn contains(&self, session: SessionId, filter: &SubscriptionFilter<'_>) -> bool {
        self.get(session, filter).is_some()
    }

    /// The options and identifier of `session`'s subscription to `filter`.
    pub fn get(
        &self,
        session: SessionId,
        filter: &SubscriptionFilter<'_>,
    ) -> Option<(SubscriptionOptions, Option<SubscriptionId>)> {
        let node = self.find_node(filter)?;
        let owner = match filter.group() {
            None => Owner::Node(node),
            Some(name) => Owner::Group(self.find_group(node, name)?),
        };
        let sub = self.subs.get(self.find_sub(owner, session)?)?;
        Some((sub.options, sub.identifier))
    }

    /// Removes `session`'s subscription to `filter`; `false` if there was none.
    pub fn unsubscribe(&mut self, session: SessionId, filter: &SubscriptionFilter<'_>) -> bool {
        let Some(node) = self.find_node(filter) else {
            return false;
        };
        let owner = match filter.group() {
            None => Owner::Node(node),
            Some(name) => match self.find_group(node, name) {
                Some(group) => Owner::Group(group),
                None => return false,
            },
        };
        let Some(handle) = self.find_sub(owner, session) else {
            return false;
        };
        self.remove_subscription(handle);
        true
    }

    /// Removes every subscription of `session` (when its session ends); returns how many.
    pub fn unsubscribe_all(&mut self, session: SessionId) -> usize {
        let mut removed = 0;
        while let Some(head) = self.session_head(session) {
            self.remove_subscription(head);
            removed += 1;
        }
        removed
    }

    /// Calls `f` with each subscription of `session`: its filter as written in SUBSCRIBE
    /// (rebuilt into `scratch`, with any `$share/{group}/` prefix), options and identifier.
    /// Filters longer than `scratch` are skipped.
    pub fn for_each_subscription(
        &self,
        session: SessionId,
        scratch: &mut [u8],
        mut f: impl FnMut(&str, SubscriptionOptions, Option<SubscriptionId>),
    ) {
        let mut cursor = self.session_head(session);
        while let Some(handle) = cursor {
            let Some(sub) = self.subs.get(handle) else {
                return;
            };
            if let Some(filter) = self.filter_text(sub.owner(), scratch) {
                f(filter, sub.options, sub.identifier);
            }
            cursor = sub.session_next.get();
        }
    }

    /// Writes the filter of `owner` into `out`, from the root down.
    fn filter_text<'b>(&self, owner: Owner, out: &'b mut [u8]) -> Option<&'b str> {
        let (node, group) = match owner {
            Owner::Node(n) => (n, None),
            Owner::Group(g) => {
                let group = self.groups.get(g)?;
                (group.node, Some(group.name.as_str()))
            }
        };
        // Levels are collected leaf first, so write them from the end of `out` backwards.
        let mut end = out.len();
        let mut cursor = Some(node);
        let mut first = true;
        while let Some(handle) = cursor {
            let n = self.nodes.get(handle)?;
            if n.parent.is_none() {
                break;
            }
            if !first {
                end = end.checked_sub(1)?;
                out[end] = b'/';
            }
            first = false;
            let level = self.levels.bytes(&n.level);
            end = end.checked_sub(level.len())?;
            out[end..end + level.len()].copy_from_slice(level);
            cursor = n.parent.get();
        }
        if let Some(name) = group {
            for part in [
                b"/".as_slice(),
                name.as_bytes(),
                crate::topic::SHARE_PREFIX.as_bytes(),
            ] {
                end = end.checked_sub(part.len())?;
                out[end..end + part.len()].copy_from_slice(part);
            }
        }
        let len = out.len() - end;
        out.copy_within(end.., 0);
        core::str::from_utf8(&out[..len]).ok()
    }

    fn session_key(&self, session: SessionId) -> u32 {
        hash_key(self.seed, u32::MAX, &session.0.to_le_bytes())
    }

    fn session_head(&self, session: SessionId) -> Option<u32> {
        let hash = self.session_key(session);
        self.session_heads.find(hash, |h| {
            self.subs
                .get(h)
                .is_some_and(|s| s.session == session && s.session_prev.is_none())
        })
    }

    /// Removes a subscription with everything that only existed for it.
    fn remove_subscription(&mut self, handle: u32) {
        let Some(sub) = self.subs.get(handle) else {
            return;
        };
        let owner = sub.owner();
        let node = match owner {
            Owner::Node(n) => Some(n),
            Owner::Group(g) => self.groups.get(g).map(|g| g.node),
        };
        self.remove_sub(handle);
        self.drop_group_if_empty(owner);
        if let Some(node) = node {
            self.prune(node);
        }
    }

    /// Reports every subscription matching `topic` to `emit`: every plain subscription
    /// (except no-local ones of the `publisher` itself, [MQTT-3.8.3-3]) and one chosen
    /// member of each matching `$share` group.
    pub fn route(
        &self,
        topic: &TopicName<'_>,
        publisher: Option<SessionId>,
        emit: impl FnMut(Match),
    ) {
        self.route_scoped(topic, publisher, Scope::All, emit);
    }

    /// [`Router::route`] limited to the subscriptions `scope` admits.
    pub fn route_scoped(
        &self,
        topic: &TopicName<'_>,
        publisher: Option<SessionId>,
        scope: Scope<'_>,
        mut emit: impl FnMut(Match),
    ) {
        self.walk_from_root(topic, publisher, scope, &mut emit);
    }

    /// Walks the trie for `topic`, reporting matches to `emit`; returns how many nodes
    /// reported any.
    fn walk_from_root(
        &self,
        topic: &TopicName<'_>,
        publisher: Option<SessionId>,
        scope: Scope<'_>,
        emit: &mut impl FnMut(Match),
    ) -> u32 {
        let Some(root) = self.root else { return 0 };
        let ctx = Walk {
            topic: topic.as_str(),
            publisher,
            scope,
            emitting_nodes: Cell::new(0),
        };
        self.walk(root, Some(topic.as_str()), true, &ctx, emit);
        ctx.emitting_nodes.get()
    }

    /// The deliveries for a message on `topic`: [`Router::route`]'s matches merged per
    /// session (highest QoS, every identifier) and kept apart for `$share` copies.
    /// `out` is cleared first; a full fixed-capacity `out` is an error.
    pub fn deliveries<D: Storage<Delivery>>(
        &self,
        topic: &TopicName<'_>,
        publisher: Option<SessionId>,
        out: &mut D,
    ) -> Result<(), CapacityError> {
        self.deliveries_scoped(topic, publisher, Scope::All, out)
    }

    /// [`Router::deliveries`] limited to the subscriptions `scope` admits.
    pub fn deliveries_scoped<D: Storage<Delivery>>(
        &self,
        topic: &TopicName<'_>,
        publisher: Option<SessionId>,
        scope: Scope<'_>,
        out: &mut D,
    ) -> Result<(), CapacityError> {
        out.truncate(0);
        let mut result = Ok(());
        let nodes = self.walk_from_root(topic, publisher, scope, &mut |m: Match| {
            if result.is_err() {
                return;
            }
            let mut identifiers = heapless::Vec::new();
            if let Some(id) = m.identifier {
                // A fresh vector always has room for one.
                let _ = identifiers.push(id);
            }
            result = out.push(Delivery {
                session: m.session,
                qos: m.options.qos,
                retain_as_published: m.options.retain_as_published,
                identifiers,
                shared: m.shared,
            });
        });
        result?;
        // A node holds one subscription per session, so the matches of a single node (a
        // fan-out's usual case) have nothing to merge, and need no sort by session.
        if nodes > 1 {
            merge_per_session(out);
        }
        Ok(())
    }

    fn walk(
        &self,
        handle: u32,
        rest: Option<&str>,
        at_root: bool,
        ctx: &Walk<'_>,
        emit: &mut impl FnMut(Match),
    ) {
        let Some(node) = self.nodes.get(handle) else {
            return;
        };
        // [MQTT-4.7.2-1]: a wildcard at the first level never matches a `$` topic.
        let wildcards = !(at_root && ctx.topic.starts_with('$'));
        let Some(rest) = rest else {
            // Every level consumed: this node's filters match, and so does `parent/#`
            // (`#` includes the parent level, §4.7.1.2).
            self.emit_node(node, ctx, emit);
            if let Some(hash) = node.hash.get().and_then(|h| self.nodes.get(h)) {
                self.emit_node(hash, ctx, emit);
            }
            return;
        };
        let (level, next) = match rest.split_once(LEVEL_SEPARATOR) {
            Some((level, next)) => (level, Some(next)),
            None => (rest, None),
        };
        if wildcards {
            if let Some(hash) = node.hash.get().and_then(|h| self.nodes.get(h)) {
                self.emit_node(hash, ctx, emit);
            }
            if let Some(plus) = node.plus.get() {
                self.walk(plus, next, false, ctx, emit);
            }
        }
        if let Some(child) = self.find_child(handle, level) {
            self.walk(child, next, false, ctx, emit);
        }
    }

    fn emit_node(&self, node: &Node<Level<S>>, ctx: &Walk<'_>, emit: &mut impl FnMut(Match)) {
        let (plain, only_group, is_local) = match ctx.scope {
            Scope::All => (true, None, None),
            Scope::Forwarded { group, is_local } => (group.is_none(), group, Some(is_local)),
        };
        let mut cursor = if plain { node.subs.get() } else { None };
        let mut emitted = false;
        let mut emit = |m: Match| {
            if !emitted {
                emitted = true;
                ctx.emitting_nodes.set(ctx.emitting_nodes.get() + 1);
            }
            emit(m);
        };
        while let Some(handle) = cursor {
            let Some(sub) = self.subs.get(handle) else {
                break;
            };
            let admitted = is_local.is_none_or(|local| local(sub.session));
            // [MQTT-3.8.3-3]: no-local subscriptions do not receive their own messages.
            if admitted && !(sub.options.no_local && Some(sub.session) == ctx.publisher) {
                emit(Match {
                    session: sub.session,
                    options: sub.options,
                    identifier: sub.identifier,
                    shared: false,
                });
            }
            cursor = sub.next.get();
        }
        let mut groups = if matches!(ctx.scope, Scope::Forwarded { group: None, .. }) {
            None
        } else {
            node.groups.get()
        };
        while let Some(handle) = groups {
            let Some(group) = self.groups.get(handle) else {
                break;
            };
            let picked = match (only_group, is_local) {
                (Some(key), Some(local)) if key == group.key => {
                    self.pick_local_member(group, local)
                }
                (Some(_), _) => None,
                _ => self.pick_member(group, ctx),
            };
            if let Some(sub) = picked.and_then(|h| self.subs.get(h)) {
                emit(Match {
                    session: sub.session,
                    options: sub.options,
                    identifier: sub.identifier,
                    shared: true,
                });
            }
            groups = group.next.get();
        }
    }

    /// The member of `group` that receives this message.
    fn pick_member(&self, group: &Group<S::Text>, ctx: &Walk<'_>) -> Option<u32> {
        let nth = |n: u32| {
            let mut cursor = group.members.get();
            for _ in 0..n {
                cursor = cursor
                    .and_then(|h| self.subs.get(h))
                    .and_then(|s| s.next.get());
            }
            cursor
        };
        let count = group.count.max(1);
        match self.strategy {
            ShareStrategy::RoundRobin => {
                let pick = group.next_pick.get().get().or(group.members.get())?;
                let after = self.subs.get(pick).and_then(|s| s.next.get());
                group.next_pick.set(after.or(group.members.get()).into());
                Some(pick)
            }
            ShareStrategy::Random => {
                let (state, value) = share::next_random(self.random.get());
                self.random.set(state);
                nth((value % u64::from(count)) as u32)
            }
            ShareStrategy::HashPublisher => {
                let key = ctx.publisher.map_or(u32::MAX, |s| s.0);
                nth(hash_key(self.seed, key, &[]) % count)
            }
            ShareStrategy::HashTopic => nth(hash_key(self.seed, 0, ctx.topic.as_bytes()) % count),
        }
    }

    /// The member of `group` that receives a forwarded message: the next one, round robin,
    /// among those `is_local` admits (the forwarding broker chose this broker for the
    /// group; which of its members gets the message is this broker's choice).
    fn pick_local_member(
        &self,
        group: &Group<S::Text>,
        is_local: &dyn Fn(SessionId) -> bool,
    ) -> Option<u32> {
        let start = group.next_pick.get().get().or(group.members.get())?;
        let mut cursor = start;
        for _ in 0..group.count.max(1) {
            let sub = self.subs.get(cursor)?;
            let after = sub.next.get().or(group.members.get());
            if is_local(sub.session) {
                group.next_pick.set(after.into());
                return Some(cursor);
            }
            cursor = after?;
            if cursor == start {
                break;
            }
        }
        None
    }

    fn level_hash(&self, parent: u32, level: &str) -> u32 {
        hash_key(self.seed, parent, level.as_bytes())
    }

    fn find_child(&self, parent: u32, level: &str) -> Option<u32> {
        let hash = self.level_hash(parent, level);
        self.children.find(hash, |h| {
            self.nodes.get(h).is_some_and(|n| {
                n.parent == Link::to(parent) && self.levels.bytes(&n.level) == level.as_bytes()
            })
        })
    }

    /// The node of `filter`, if it exists.
    fn find_node(&self, filter: &SubscriptionFilter<'_>) -> Option<u32> {
        let mut node = self.root?;
        for level in filter.filter().levels() {
            let current = self.nodes.get(node)?;
            node = match level {
                "+" => current.plus.get()?,
                "#" => current.hash.get()?,
                _ => self.find_child(node, level)?,
            };
        }
        Some(node)
    }

    /// The node of `filter`, created with its missing ancestors; on failure nothing new
    /// remains.
    fn node_for(&mut self, filter: &SubscriptionFilter<'_>) -> Result<u32, RouterError> {
        let mut node = self.root_or_insert()?;
        for level in filter.filter().levels() {
            match self.child_or_insert(node, level) {
                Ok(child) => node = child,
                Err(e) => {
                    self.prune(node);
                    return Err(e);
                }
            }
        }
        Ok(node)
    }

    fn child_or_insert(&mut self, parent: u32, level: &str) -> Result<u32, RouterError> {
        let existing = match level {
            "+" => self.nodes.get(parent).and_then(|n| n.plus.get()),
            "#" => self.nodes.get(parent).and_then(|n| n.hash.get()),
            _ => self.find_child(parent, level),
        };
        if let Some(child) = existing {
            return Ok(child);
        }
        let child = self.insert_node(Link::to(parent), level)?;
        let linked = match level {
            "+" => self
                .nodes
                .get_mut(parent)
                .map(|n| n.plus = Link::to(child))
                .ok_or(CapacityError),
            "#" => self
                .nodes
                .get_mut(parent)
                .map(|n| n.hash = Link::to(child))
                .ok_or(CapacityError),
            _ => {
                let hash = self.level_hash(parent, level);
                self.children.insert(hash, child).and_then(|()| {
                    self.nodes
                        .get_mut(parent)
                        .map(|n| n.literal_children += 1)
                        .ok_or(CapacityError)
                })
            }
        };
        if let Err(e) = linked {
            self.remove_node(child);
            return Err(e.into());
        }
        Ok(child)
    }

    /// Removes `node` and its ancestors for as long as they hold nothing.
    fn prune(&mut self, mut handle: u32) {
        while Some(handle) != self.root {
            let Some(node) = self.nodes.get(handle) else {
                return;
            };
            if !node.is_unused() {
                return;
            }
            let Some(parent) = node.parent.get() else {
                return;
            };
            let level = self.levels.bytes(&node.level);
            let hash = hash_key(self.seed, parent, level);
            let is_plus = level == b"+";
            let is_hash = level == b"#";
            if let Some(p) = self.nodes.get_mut(parent) {
                if is_plus {
                    p.plus = Link::NONE;
                } else if is_hash {
                    p.hash = Link::NONE;
                } else {
                    p.literal_children -= 1;
                }
            }
            if !is_plus && !is_hash {
                self.children.remove(hash, |h| h == handle);
            }
            self.remove_node(handle);
            handle = parent;
        }
    }

    /// Adds a node with no child and no subscription yet.
    fn insert_node(&mut self, parent: Link, level: &str) -> Result<u32, RouterError> {
        // Room for the node first, so a level is never stored for a node that fails.
        if !self.nodes.has_room_for(1) {
            return Err(RouterError::Capacity);
        }
        let level = self.levels.store(level)?;
        Ok(self.nodes.insert(Node::leaf(parent, level))?)
    }

    /// Removes a node and gives its level's room back.
    fn remove_node(&mut self, handle: u32) {
        let Some(node) = self.nodes.remove(handle) else {
            return;
        };
        self.levels.free(&node.level);
        if S::Levels::COMPACTS {
            for other in self.nodes.values_mut() {
                S::Levels::moved(&mut other.level, &node.level);
            }
        }
    }

    fn find_group(&self, node: u32, name: &str) -> Option<u32> {
        let mut cursor = self.nodes.get(node)?.groups.get();
        while let Some(handle) = cursor {
            let group = self.groups.get(handle)?;
            if group.name.as_str() == name {
                return Some(handle);
            }
            cursor = group.next.get();
        }
        None
    }

    fn add_group(&mut self, node: u32, name: &str, key: u32) -> Result<u32, RouterError> {
        let head = self.nodes.get(node).and_then(|n| n.groups.get());
        let handle = self.groups.insert(Group {
            name: Text::from_str(name)?,
            node,
            key,
            members: Link::NONE,
            count: 0,
            next_pick: Cell::new(Link::NONE),
            prev: Link::NONE,
            next: head.into(),
        })?;
        if let Some(old) = head.and_then(|h| self.groups.get_mut(h)) {
            old.prev = Link::to(handle);
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.groups = Link::to(handle);
        }
        Ok(handle)
    }

    fn drop_group_if_empty(&mut self, owner: Owner) {
        let Owner::Group(handle) = owner else { return };
        let Some(group) = self.groups.get(handle) else {
            return;
        };
        if !group.members.is_none() {
            return;
        }
        let (node, prev, next) = (group.node, group.prev, group.next);
        match prev.get().and_then(|p| self.groups.get_mut(p)) {
            Some(p) => p.next = next,
            None => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.groups = next;
                }
            }
        }
        if let Some(n) = next.get().and_then(|n| self.groups.get_mut(n)) {
            n.prev = prev;
        }
        self.groups.remove(handle);
    }

    fn session_hash(&self, owner: Owner, session: SessionId) -> u32 {
        hash_key(self.seed, owner.key(), &session.0.to_le_bytes())
    }

    fn find_sub(&self, owner: Owner, session: SessionId) -> Option<u32> {
        let hash = self.session_hash(owner, session);
        self.by_session.find(hash, |h| {
            self.subs
                .get(h)
                .is_some_and(|s| s.owner == owner.key() && s.session == session)
        })
    }

    fn list_head(&mut self, owner: Owner) -> Option<&mut Link> {
        match owner {
            Owner::Node(n) => self.nodes.get_mut(n).map(|n| &mut n.subs),
            Owner::Group(g) => self.groups.get_mut(g).map(|g| &mut g.members),
        }
    }

    fn add_sub(
        &mut self,
        owner: Owner,
        session: SessionId,
        options: SubscriptionOptions,
        identifier: Option<SubscriptionId>,
    ) -> Result<(), RouterError> {
        let head = self.list_head(owner).and_then(|h| h.get());
        let session_head = self.session_head(session);
        let handle = self.subs.insert(Sub {
            session,
            options,
            identifier,
            owner: owner.key(),
            prev: Link::NONE,
            next: head.into(),
            session_prev: session_head.into(),
            session_next: Link::NONE,
        })?;
        let hash = self.session_hash(owner, session);
        if let Err(e) = self.by_session.insert(hash, handle) {
            self.subs.remove(handle);
            return Err(e.into());
        }
        match session_head {
            // Second in the session's chain, so the indexed head stays as it is.
            Some(first) => {
                let after = self.subs.get_mut(first).map_or(Link::NONE, |f| {
                    core::mem::replace(&mut f.session_next, Link::to(handle))
                });
                if let Some(sub) = self.subs.get_mut(handle) {
                    sub.session_next = after;
                }
                if let Some(next) = after.get().and_then(|a| self.subs.get_mut(a)) {
                    next.session_prev = Link::to(handle);
                }
            }
            None => {
                let key = self.session_key(session);
                if let Err(e) = self.session_heads.insert(key, handle) {
                    self.by_session.remove(hash, |h| h == handle);
                    self.subs.remove(handle);
                    return Err(e.into());
                }
            }
        }
        if let Some(old) = head.and_then(|h| self.subs.get_mut(h)) {
            old.prev = Link::to(handle);
        }
        if let Some(h) = self.list_head(owner) {
            *h = Link::to(handle);
        }
        if let Owner::Group(g) = owner
            && let Some(group) = self.groups.get_mut(g)
        {
            group.count += 1;
        }
        Ok(())
    }

    fn remove_sub(&mut self, handle: u32) {
        let Some(sub) = self.subs.remove(handle) else {
            return;
        };
        let owner = sub.owner();
        let hash = self.session_hash(owner, sub.session);
        self.by_session.remove(hash, |h| h == handle);
        match sub.session_prev.get() {
            Some(prev) => {
                if let Some(p) = self.subs.get_mut(prev) {
                    p.session_next = sub.session_next;
                }
                if let Some(n) = sub.session_next.get().and_then(|n| self.subs.get_mut(n)) {
                    n.session_prev = Link::to(prev);
                }
            }
            None => {
                // The head leaves: its successor becomes the indexed head. The removal just
                // freed a place, so the insert cannot run out of room.
                let key = self.session_key(sub.session);
                self.session_heads.remove(key, |h| h == handle);
                if let Some(next) = sub.session_next.get() {
                    if let Some(n) = self.subs.get_mut(next) {
                        n.session_prev = Link::NONE;
                    }
                    let _ = self.session_heads.insert(key, next);
                }
            }
        }
        match sub.prev.get().and_then(|p| self.subs.get_mut(p)) {
            Some(prev) => prev.next = sub.next,
            None => {
                if let Some(h) = self.list_head(owner) {
                    *h = sub.next;
                }
            }
        }
        if let Some(next) = sub.next.get().and_then(|n| self.subs.get_mut(n)) {
            next.prev = sub.prev;
        }
        if let Owner::Group(g) = owner
            && let Some(group) = self.groups.get_mut(g)
        {
            group.count -= 1;
            if group.next_pick.get() == Link::to(handle) {
                group.next_pick.set(sub.next);
            }
        }
    }
}

/// What a match walk needs besides the trie.
/// Which subscriptions a route reports.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    /// Every matching subscription: a message published to this broker.
    All,
    /// A message another broker of the same process (a shard) routed already, which
    /// forwarded it here for this broker's own sessions (`is_local`): with `group: None`,
    /// their plain subscriptions; with `Some(key)`, only the share group of that
    /// [`share_key`], whose member the other broker chose to be here.
    Forwarded {
        /// The share group this copy is for.
        group: Option<u32>,
        /// Whether a session is this broker's own (not another broker's stand-in).
        is_local: &'a dyn Fn(SessionId) -> bool,
    },
}

impl fmt::Debug for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("All"),
            Self::Forwarded { group, .. } => {
                f.debug_struct("Forwarded").field("group", group).finish()
            }
        }
    }
}

/// Largest value a subscription identifier may take (5.0 §3.8.2.1.2: a variable byte
/// integer of 1 to 268,435,455).
pub const SUBSCRIPTION_ID_MAX: u32 = 268_435_455;

/// A share group's key, the same in every broker of a process (unlike the router's keyed
/// hashes): brokers that forward messages to each other name groups by it. Always a valid
/// subscription identifier below [`SUBSCRIPTION_ID_MAX`], which stays free as a marker.
pub fn share_key(group: &str, filter: &str) -> u32 {
    const SEED: u64 = 0x5348_4152_455f_4b45;
    let h = hash_key(SEED, hash_key(SEED, 0, group.as_bytes()), filter.as_bytes());
    h % (SUBSCRIPTION_ID_MAX - 1) + 1
}

struct Walk<'t> {
    topic: &'t str,
    publisher: Option<SessionId>,
    scope: Scope<'t>,
    /// Nodes that reported a match so far.
    emitting_nodes: Cell<u32>,
}

/// Merges the plain deliveries of each session into one (sorted by session), keeping
/// `$share` copies separate (§4.8.2: a shared copy is in addition to a plain one).
fn merge_per_session<D: Storage<Delivery>>(out: &mut D) {
    let items = out.as_mut_slice();
    let key = |d: &Delivery| (d.session, d.shared);
    if D::FIXED_CAPACITY.is_some() {
        // A fixed store holds a few dozen deliveries at most (one per subscription): an
        // insertion sort is quick enough there and keeps the general sort's kilobytes of
        // code out of a firmware's flash. (Decided at build time: each store keeps one.)
        for i in 1..items.len() {
            let mut j = i;
            while j > 0 && key(&items[j - 1]) > key(&items[j]) {
                items.swap(j - 1, j);
                j -= 1;
            }
        }
    } else {
        items.sort_unstable_by_key(key);
    }
    let mut kept = 0;
    for i in 0..items.len() {
        if kept > 0 {
            let (done, rest) = items.split_at_mut(i);
            let last = &mut done[kept - 1];
            let current = &rest[0];
            let fits = last.identifiers.len() + current.identifiers.len() <= MAX_IDENTIFIERS;
            if last.session == current.session && !last.shared && !current.shared && fits {
                last.qos = last.qos.max(current.qos);
                last.retain_as_published |= current.retain_as_published;
                for id in &current.identifiers {
                    // `fits` checked the room.
                    let _ = last.identifiers.push(*id);
                }
                continue;
            }
        }
        items.swap(kept, i);
        kept += 1;
    }
    out.truncate(kept);
}

#[cfg(test)]
mod tests;
