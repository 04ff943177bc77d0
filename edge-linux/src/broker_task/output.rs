//! A connection's output between the actor and the connection's writer: the actor's end
//! ([`Link`]) appends chunks to the connection's [`Room`], which also counts what the
//! writer has not written yet (the actor stops at [`OUTPUT_BYTES`]) and pauses the reader
//! under backpressure; writers are woken once per batch of the actor's work ([`Wakes`]);
//! output buffers are recycled between writers and the actor ([`buffers`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Bytes of output per connection handed to its writer and not yet written to the socket,
/// beyond which the actor leaves that connection's output in the core. One chunk may
/// overshoot it by up to the transmit buffer's size (the maximum packet size plus
/// [`super::TRANSMIT_MARGIN`]).
pub(crate) const OUTPUT_BYTES: usize = 256 * 1024;
/// Output at which a writer is woken without waiting for the actor to finish its batch
/// ([`Wakes`]).
pub(super) const WAKE_BYTES: usize = 64 * 1024;

/// Output from which a buffer that must grow grows to the next size it may reach
/// ([`WAKE_BYTES`], [`OUTPUT_BYTES`]) at once.
const GROW_AHEAD: usize = 4 * 1024;
/// Room beyond [`OUTPUT_BYTES`] in a busy connection's buffer: the chunk that crosses the
/// limit.
const BUSY_MARGIN: usize = 16 * 1024;

/// The actor's end of a connection's output: chunks go into the connection's [`Room`],
/// where its writer takes them. Dropping it (or [`Link::finish`]) tells the writer that
/// nothing more comes, so no path that forgets a connection can leave its writer waiting.
#[derive(Debug)]
pub(crate) struct Link {
    /// How much output waits for the writer, and the output itself.
    pub(crate) room: Arc<Room>,
}

impl Link {
    /// Whether the writer is gone (its transport failed).
    pub(super) fn is_closed(&self) -> bool {
        self.room.lock_output().writer_gone
    }

    /// Hands a chunk to the writer and wakes it; `Err` when the writer is gone.
    pub(super) fn send(&self, chunk: Vec<u8>) -> Result<(), WriterGone> {
        self.append(&chunk, &mut Wakes::default())?;
        self.room.task.wake();
        Ok(())
    }

    /// Hands a chunk to the writer; `Err` when the writer is gone. The writer is woken at
    /// once when its output reaches [`WAKE_BYTES`]; otherwise the room is added to
    /// `wakes` (when the writer had nothing to write), so that the writer wakes once for
    /// everything the actor gives it in one go, and writes it with one system call.
    pub(super) fn append(&self, chunk: &[u8], wakes: &mut Wakes) -> Result<(), WriterGone> {
        let mut output = self.room.lock_output();
        if output.writer_gone {
            return Err(WriterGone);
        }
        let before = output.pending.len();
        output.push(chunk);
        let after = output.pending.len();
        drop(output);
        if before < WAKE_BYTES && after >= WAKE_BYTES {
            self.room.task.wake();
        } else if before == 0 {
            wakes.add(&self.room);
        }
        Ok(())
    }

    /// The last bytes to write (a CONNACK refusal, a DISCONNECT), after which the writer
    /// closes the transport.
    pub(super) fn finish(self, last: Vec<u8>) {
        self.room.lock_output().push(&last);
        // `Drop` marks the end.
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.room.lock_output().finished = true;
        self.room.task.wake();
    }
}

/// Writers the actor gave output since it last woke them. Waking a writer at every chunk
/// would have it write each chunk as it comes (the other worker threads run it at once):
/// under load that is one system call (and one read for the client) per message or two.
/// Woken once the actor is done with what it had to do (a batch of input, a timeout, a
/// commit), a writer takes all of its output in one write; or as soon as it has
/// [`WAKE_BYTES`], so that a batch that fills the writers of a fan-out does not leave them
/// idle until its end.
#[derive(Debug, Default)]
pub(super) struct Wakes(Vec<Arc<Room>>);

impl Wakes {
    /// Notes that `room`'s writer has output to take.
    pub(super) fn add(&mut self, room: &Arc<Room>) {
        self.0.push(room.clone());
    }

    /// Wakes every writer noted.
    pub(super) fn wake_all(&mut self) {
        for room in self.0.drain(..) {
            room.task.wake();
        }
    }
}

/// A connection's writer is gone (its transport failed or closed).
#[derive(Debug)]
pub(crate) struct WriterGone;

/// Output buffers, recycled: a writer gives back the buffer it has written, and the actor
/// fills it for another connection. Under load each connection's output is a buffer of
/// tens of KiB a wake-up; allocating it anew each time cost the actor a fifth of its time
/// (growing it chunk by chunk, faulting its pages in, freeing it). An idle connection
/// holds none: its writer gave it back.
pub(crate) mod buffers {
    use std::sync::Mutex;

    /// Buffers smaller than this are freed rather than kept: the output of a connection
    /// that is not busy (a CONNACK, a PUBACK) is small, and small allocations are cheap.
    /// Kept, they would also hold memory for connections that are gone or idle.
    const MIN_CAPACITY: usize = 16 * 1024;
    /// Buffers larger than this are freed rather than kept (a connection's output is at
    /// most [`super::OUTPUT_BYTES`] and a packet more).
    const MAX_CAPACITY: usize = 1024 * 1024;
    /// Bytes of capacity kept at most, all buffers together.
    const MAX_KEPT: usize = 16 * 1024 * 1024;

    /// The buffers kept, and their capacity in bytes.
    static KEPT: Mutex<(Vec<Vec<u8>>, usize)> = Mutex::new((Vec::new(), 0));

    /// An empty buffer for at least `len` bytes, recycled when one is kept.
    pub(crate) fn take(len: usize) -> Vec<u8> {
        let mut kept = KEPT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match kept.0.pop() {
            // Too small: a new one, rather than `reserve`, whose `realloc` would copy it
            // all (its length is zero, but the allocator does not know that).
            Some(buffer) if buffer.capacity() < len => {
                kept.1 -= buffer.capacity();
                drop(kept);
                drop(buffer);
                Vec::with_capacity(len)
            }
            Some(buffer) => {
                kept.1 -= buffer.capacity();
                buffer
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps `buffer` for [`take`], unless it is too small or too large, or enough are
    /// kept.
    pub(crate) fn give(mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return;
        }
        buffer.clear();
        let mut kept = KEPT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.1 + capacity <= MAX_KEPT {
            kept.1 += capacity;
            kept.0.push(buffer);
        }
    }
}

/// What [`Room::poll_next_output`] gives the writer.
#[derive(Debug)]
pub(crate) enum Output {
    /// Bytes to write (every chunk queued, joined into one write).
    Bytes(Vec<u8>),
    /// The actor let the connection go: write these last bytes (what was still queued,
    /// then its last words), then close.
    Last(Vec<u8>),
}

/// Output between the actor and a connection's writer.
#[derive(Debug, Default)]
pub(crate) struct OutputQueue {
    /// Every chunk not taken by the writer yet, joined: one buffer rather than a queue of
    /// them, so a connection whose output is written holds no allocation here.
    pending: Vec<u8>,
    /// The actor dropped its [`Link`]: no more chunks come.
    finished: bool,
    /// The writer stopped (its transport failed or closed).
    writer_gone: bool,
    /// The writer's last output was at least [`WAKE_BYTES`]: the next buffer is taken for
    /// as much as it may get.
    busy: bool,
    /// The connection is parked ([`crate::park`]) under this key plus one; 0 while it has a
    /// task. Here, under the lock, it takes no room of its own.
    parked: u32,
}

impl OutputQueue {
    fn push(&mut self, chunk: &[u8]) {
        let len = self.pending.len();
        if self.pending.capacity() == 0 {
            // A busy connection's output may grow up to `OUTPUT_BYTES` before its writer
            // takes it: room for all of it at once. Otherwise as much as there is, so a
            // connection that gets a packet now and then holds no more than that (a
            // larger buffer each, even unused, costs idle connections memory).
            self.pending = buffers::take(if self.busy {
                chunk.len().max(OUTPUT_BYTES + BUSY_MARGIN)
            } else {
                chunk.len()
            });
        } else if self.pending.capacity() - len < chunk.len() && len >= GROW_AHEAD {
            // Output reaches `WAKE_BYTES` before its writer is woken, and `OUTPUT_BYTES`
            // at most: grow to the next of these (and this chunk) in one step. Grown
            // again and again, the buffer was copied at every step: in a fan-out to 500
            // lagging subscribers that copying took a tenth of the broker's time. (A
            // few small packets grow it as usual.)
            let target = if len < WAKE_BYTES {
                WAKE_BYTES
            } else {
                OUTPUT_BYTES
            };
            self.pending
                .reserve(target.saturating_sub(len) + chunk.len());
        }
        self.pending.extend_from_slice(chunk);
    }
}

/// The output a connection's writer has not written yet, shared by the actor (which adds)
/// and the writer (which subtracts). Held by both ends of a connection: small, because an
/// idle connection costs this and little more (no channel allocations); 72 bytes, so with
/// the `Arc`'s counts and the allocator's header it takes a 96-byte block (checked by a
/// test).
#[derive(Debug, Default)]
pub(crate) struct Room {
    /// Bytes sent to the writer and not yet written to the socket: at most
    /// [`OUTPUT_BYTES`] and one chunk, which is one packet of at most 256 MiB and a margin,
    /// so 32 bits count it.
    queued: AtomicU32,
    /// Set by the actor when it stopped at [`OUTPUT_BYTES`]: the writer reports
    /// [`super::Input::Drained`] once `queued` is down to half.
    pub(crate) wanted: AtomicBool,
    /// Backpressure on input: set while the core holds this connection's next PUBLISH
    /// back ([`Broker::is_stalled`](fulmar_core::broker::Broker::is_stalled)); the reader
    /// does not read meanwhile, so the kernel's buffers fill and TCP slows the publisher
    /// down.
    input_paused: AtomicBool,
    /// Chunks for the writer, in order.
    output: std::sync::Mutex<OutputQueue>,
    /// Wakes the connection's task when output arrives, the actor lets the connection go,
    /// or `input_paused` is cleared; while the connection is parked, this room itself
    /// (its [`Wake`]), which has the parking lot bring the connection back.
    task: AtomicWaker,
    /// The connection is a candidate for parking ([`crate::park::enroll`]).
    pub(crate) enrolled: AtomicBool,
    /// Where the connection is in its first exchange, for parking ([`crate::park::answered`]).
    pub(crate) first: AtomicU8,
}

impl Room {
    /// Bytes sent to the writer and not yet written.
    fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst) as usize
    }

    /// Counts `n` bytes more sent to the writer.
    pub(super) fn add_queued(&self, n: usize) {
        self.queued
            .fetch_add(u32::try_from(n).unwrap_or(u32::MAX), Ordering::SeqCst);
    }

    /// Whether the actor may hand the writer more output.
    pub(super) fn has_room(&self) -> bool {
        self.queued() < OUTPUT_BYTES
    }

    /// Whether the writer is far enough behind the limit to take output again.
    pub(super) fn drained(&self) -> bool {
        self.queued() <= OUTPUT_BYTES / 2
    }

    /// Whether the actor takes input from this connection; when not, `cx` is woken once
    /// it does again.
    pub(crate) fn input_allowed(&self, cx: &mut Context<'_>) -> bool {
        if !self.input_paused.load(Ordering::SeqCst) {
            return true;
        }
        // Registered before the second look, so a resume in between is not lost.
        self.task.register(cx.waker());
        !self.input_paused.load(Ordering::SeqCst)
    }

    /// Whether the actor holds this connection's input back.
    pub(crate) fn input_paused(&self) -> bool {
        self.input_paused.load(Ordering::SeqCst)
    }

    pub(super) fn pause_input(&self) {
        self.input_paused.store(true, Ordering::SeqCst);
    }

    pub(super) fn resume_input(&self) {
        self.input_paused.store(false, Ordering::SeqCst);
        self.task.wake();
    }

    fn lock_output(&self) -> std::sync::MutexGuard<'_, OutputQueue> {
        // Nothing panics while holding the lock; a poisoned queue is still consistent.
        self.output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writer's next output, waiting for it. Chunks queued while the writer was busy
    /// are joined into one write: one system call (and one TLS record or WebSocket frame)
    /// for many small packets.
    pub(crate) fn poll_next_output(&self, cx: &mut Context<'_>) -> Poll<Output> {
        if let Some(output) = self.take_output() {
            return Poll::Ready(output);
        }
        // Registered before the second look, so output added in between is not missed.
        self.task.register(cx.waker());
        self.take_output().map_or(Poll::Pending, Poll::Ready)
    }

    fn take_output(&self) -> Option<Output> {
        let mut output = self.lock_output();
        let bytes = std::mem::take(&mut output.pending);
        if !bytes.is_empty() {
            output.busy = bytes.len() >= WAKE_BYTES;
        }
        if output.finished {
            Some(Output::Last(bytes))
        } else {
            (!bytes.is_empty()).then_some(Output::Bytes(bytes))
        }
    }

    /// The writer stopped: the actor's next [`Link::send`] fails, and it lets the
    /// connection go.
    pub(crate) fn writer_gone(&self) {
        let mut output = self.lock_output();
        output.writer_gone = true;
        output.pending = Vec::new();
    }

    /// The connection is parked under `key` ([`crate::park`]): from now on a wake-up asks
    /// the lot to bring it back. Returns whether that must happen at once (output or the
    /// end came while it was being parked, and woke the task that is gone).
    pub(crate) fn park(self: &Arc<Self>, key: u32) -> bool {
        self.lock_output().parked = key.saturating_add(1);
        // Registered before the second look, so output added in between is not missed.
        self.task.register(&Waker::from(self.clone()));
        let output = self.lock_output();
        !output.pending.is_empty() || output.finished || output.writer_gone
    }

    /// The connection is back from the lot (or about to be): wake-ups are its new task's
    /// again. Drops the room's own waker, which would otherwise keep the room alive.
    pub(crate) fn unparked(&self) {
        self.lock_output().parked = 0;
        drop(self.task.take());
    }

    /// Wakes the connection's task, if it has one (not parked): a parking candidate whose
    /// time has come looks at itself again.
    pub(crate) fn wake_unless_parked(&self) {
        let output = self.lock_output();
        // Under the lock: parking sets the key under it and registers the room's own
        // waker only after, so the waker taken here is the task's.
        if output.parked == 0 {
            self.task.wake();
        }
    }

    /// The writer wrote `n` bytes; returns whether it must report [`super::Input::Drained`].
    pub(crate) fn written(&self, n: usize) -> bool {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let before = self.queued.fetch_sub(n, Ordering::SeqCst);
        before.saturating_sub(n) as usize <= OUTPUT_BYTES / 2
            && self.wanted.swap(false, Ordering::SeqCst)
    }
}

/// A parked connection's room is its waker: output for it, the actor letting it go, or its
/// input resumed, bring it back from the lot.
impl Wake for Room {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let parked = self.lock_output().parked;
        // Back already (0): its new task looks at the room first thing.
        if let Some(key) = parked.checked_sub(1) {
            crate::park::unpark_later(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every idle connection shares between its task and the actor.
    #[test]
    fn a_room_is_small() {
        let size = std::mem::size_of::<Room>();
        assert!(size <= 72, "a room takes {size} bytes");
    }

    /// A connection that gets a packet now and then holds a buffer of that size; one whose
    /// writer took a large output gets room for as much as it may get next, so the
    /// buffer is not grown (and copied) step by step.
    #[test]
    fn output_buffers_fit_the_connection() {
        let mut queue = OutputQueue::default();
        queue.push(&[0; 4]);
        assert!(queue.pending.capacity() < 1024);
        let mut big = OutputQueue::default();
        for _ in 0..WAKE_BYTES / 1024 {
            big.push(&[0; 1024]);
        }
        // Grown once to the wake-up size, not by doubling past it.
        assert!(big.pending.capacity() < 2 * WAKE_BYTES);
        let room = Room {
            output: std::sync::Mutex::new(big),
            ..Room::default()
        };
        assert!(matches!(room.take_output(), Some(Output::Bytes(b)) if b.len() == WAKE_BYTES));
        let mut next = room.lock_output();
        next.push(&[0; 4]);
        assert!(next.pending.capacity() >= OUTPUT_BYTES);
    }
}
