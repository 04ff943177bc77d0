//! The parking lot: idle plain-TCP connections wait here as a socket in an epoll set of the
//! lot's own, without a task or a registration with tokio's reactor.
//!
//! Every idle connection used to be a tokio task (256 bytes: a 128-byte-aligned header and
//! trailer around the 120-byte [`Driver`](crate::connection)) and its socket's
//! registration with tokio's reactor (256 bytes, also 128-byte-aligned), which, with the
//! allocator's free space between such blocks, were more than half of what an idle
//! connection cost. Mosquitto keeps an idle client as a descriptor in its epoll set; a
//! parked connection here is about that: one slab entry ([`Parked`]: the socket, its
//! [`Room`], the actor's inbox, its id, its guard), in one epoll set that one
//! thread of the lot waits on. (A task waiting on the epoll descriptor through tokio's
//! `AsyncFd` would spare the thread, but registering a raw descriptor with it is `unsafe`
//! since tokio 1.54, and the thread costs a small stack.)
//!
//! - **When**: a plain-TCP connection's driver that is fully idle (reading, nothing to
//!   write, input not held back, nothing boxed) and has done no I/O for `park_after`
//!   (`runtime.park_after_ms`) parks the next time it is polled. A coarse clock ticks
//!   every quarter of that ([`now`]); each driver stamps its last I/O with it, so no timer
//!   per connection. Idle tasks are not polled by themselves: an idle driver enrolls once
//!   ([`enroll`]) with the tick its time comes, and the lot wakes it then; it parks if it
//!   stayed idle, and enrolls again otherwise. An active connection pays an atomic load
//!   per poll and a wake-up per `park_after` at most. A new connection parks sooner: at
//!   its first idle moment after its first answer (the CONNACK), since it has no activity
//!   to go by yet; otherwise, when many connect at once (every client of a site after a
//!   restart), all of them are tasks for `park_after` together, and that peak is what the
//!   process keeps (the allocator keeps the freed blocks between live ones). That costs a
//!   connection one park and unpark at most (a client that goes on at once comes back on
//!   its next packet, and then waits `park_after` like any other).
//! - **Parking**: the driver's socket leaves tokio's reactor ([`TcpStream::into_std`]),
//!   goes into the lot's epoll set (level-triggered: bytes that arrived meanwhile report
//!   at once) and the slab; the room's waker becomes the room itself
//!   ([`Room::park`](crate::broker_task::Room)), which then checks for output that came
//!   while it was being parked. The task ends.
//! - **Unparking**: when the socket is readable, hung up or failed, or when the room is
//!   woken (the actor queued output, let the connection go, or resumed its input), the lot
//!   takes the entry out, hands the socket back to tokio and spawns a new driver in the
//!   idle state, which reads and writes what is there. No byte waits: the socket's
//!   buffers hold what the peer sent, the room what the actor queued.
//!
//! Only plain TCP parks: TLS and WebSocket state lives in their boxed futures (kilobytes
//! anyway) and keeps its task. Keep-alive needs nothing here: the core's timers run in the
//! actor, which lets an expired connection go, and that wakes the room. Shutdown neither:
//! the actors let every connection go.
//!
//! One lot serves the process (a static): the room's waker finds it without a pointer of
//! its own in every room. Connections it resumes run on the runtime of the first
//! [`Server`](crate::Server) that starts it.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use fulmar_core::broker::ConnectionId;
use rustix::event::epoll;
use slab::Slab;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, trace, warn};

use crate::broker_task::{Input, Room};
use crate::server::Guard;

/// Ticks of the clock per `park_after`: the clock ticks every quarter of it.
const TICKS_PER_PERIOD: u32 = 4;
/// Ticks without I/O before a connection parks: one more than a period's, so that it was
/// idle for at least `park_after` (its last I/O was somewhere in its first tick).
const IDLE_TICKS: u32 = TICKS_PER_PERIOD + 1;
/// Events taken from the epoll set per call.
const EVENTS: usize = 256;
/// The lot thread's stack: it spawns tasks and moves sockets, nothing deep.
const STACK: usize = 256 * 1024;

/// The lot of this process, once started.
static LOT: OnceLock<Lot> = OnceLock::new();

/// A parked connection: what its driver needs to start again, and what lives as long as
/// the connection (its guard).
#[derive(Debug)]
pub(crate) struct Parked {
    stream: std::net::TcpStream,
    room: Arc<Room>,
    inbox: mpsc::Sender<Input>,
    id: ConnectionId,
    guard: Guard,
}

/// A driver's parts, to park: its socket (still with tokio), room, actor inbox and id.
pub(crate) type Parts = (TcpStream, Arc<Room>, mpsc::Sender<Input>, ConnectionId);

#[derive(Debug)]
struct Lot {
    /// The epoll set of parked sockets, each registered with its slab key, and of
    /// `signal`.
    epoll: OwnedFd,
    /// Tells the lot's thread that `woken` has keys (registered as [`SIGNAL`]).
    signal: OwnedFd,
    /// Whether `signal` was written since the thread last looked (so it is written once
    /// per look, not per wake-up).
    signaled: AtomicBool,
    /// Boxed: the slab then holds a pointer per connection, and each entry takes a block
    /// of its own, which after a burst of connections parking reuses what their tasks
    /// freed (inline, the slab's one large block would come on top).
    parked: Mutex<Slab<Box<Parked>>>,
    /// Keys of parked connections whose rooms were woken.
    woken: Mutex<Vec<u32>>,
    /// Connections waiting for their time to park, with the tick it comes.
    candidates: Mutex<Vec<(Arc<Room>, u32)>>,
    /// The coarse clock: ticks since the lot started.
    clock: AtomicU32,
    /// Connections parked now (the slab's length, without its lock).
    count: AtomicU64,
    /// The lot's thread stopped (its epoll set failed): nothing parks any more.
    stopped: AtomicBool,
    /// Where resumed connections run.
    runtime: tokio::runtime::Handle,
}

/// The epoll key of the lot's signal (never a slab key: those fit 32 bits).
const SIGNAL: u64 = u64::MAX;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the lot, whose connections run on the current runtime: connections idle for
/// `park_after` park from now on. A second call (another server in this process) changes
/// nothing.
pub(crate) fn start(park_after: Duration) -> io::Result<()> {
    if LOT.get().is_some() {
        return Ok(());
    }
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let signal = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )?;
    epoll::add(
        &epoll,
        &signal,
        epoll::EventData::new_u64(SIGNAL),
        epoll::EventFlags::IN,
    )?;
    let lot = Lot {
        epoll,
        signal,
        signaled: AtomicBool::new(false),
        parked: Mutex::new(Slab::new()),
        woken: Mutex::new(Vec::new()),
        candidates: Mutex::new(Vec::new()),
        clock: AtomicU32::new(0),
        count: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        runtime: tokio::runtime::Handle::current(),
    };
    if LOT.set(lot).is_err() {
        // Another server started it meanwhile.
        return Ok(());
    }
    let period = (park_after / TICKS_PER_PERIOD).max(Duration::from_millis(1));
    std::thread::Builder::new()
        .name("fulmar-park".to_owned())
        .stack_size(STACK)
        .spawn(move || {
            if let Some(lot) = LOT.get() {
                lot.run(period);
            }
        })?;
    Ok(())
}

/// Connections parked now.
pub(crate) fn parked() -> u64 {
    LOT.get().map_or(0, |lot| lot.count.load(Ordering::Relaxed))
}

/// The coarse clock's tick (0 while parking is off).
pub(crate) fn now() -> u32 {
    LOT.get().map_or(0, |lot| lot.clock.load(Ordering::Relaxed))
}

/// Whether a connection whose last I/O was at tick `since` has been idle long enough to
/// park (never once the lot's thread stopped).
pub(crate) fn due(since: u32) -> bool {
    LOT.get().is_some_and(|lot| {
        lot.clock.load(Ordering::Relaxed).wrapping_sub(since) >= IDLE_TICKS
            && !lot.stopped.load(Ordering::Relaxed)
    })
}

/// [`Room::first`]: the connection has sent nothing yet.
const NEW: u8 = 0;
/// [`Room::first`]: the connection has sent its first bytes (a CONNACK) and never parked:
/// it parks at its first idle moment.
const ANSWERED: u8 = 1;
/// [`Room::first`]: the connection has parked before; it parks after `park_after`.
const SETTLED: u8 = 2;

/// Notes that a connection wrote something (its first write: the answer to its first
/// packet).
pub(crate) fn answered(room: &Room) {
    if room.first.load(Ordering::Relaxed) == NEW {
        room.first.store(ANSWERED, Ordering::Relaxed);
    }
}

/// Whether a connection parks at once, at its first idle moment after its first answer: a
/// connection just made has no activity to go by, and in a burst of new connections (all
/// clients coming back after a restart) each would otherwise hold its task for
/// `park_after`, all at once. One park and unpark per connection at most.
pub(crate) fn first_idle(room: &Room) -> bool {
    room.first.load(Ordering::Relaxed) == ANSWERED
        && LOT
            .get()
            .is_some_and(|lot| !lot.stopped.load(Ordering::Relaxed))
}

/// Enrolls an idle connection whose last I/O was at tick `since`: it is woken when it may
/// park. Once until it is woken (a flag in its room).
pub(crate) fn enroll(room: &Arc<Room>, since: u32) {
    let Some(lot) = LOT.get() else {
        return;
    };
    if room.enrolled.load(Ordering::Relaxed) || room.enrolled.swap(true, Ordering::AcqRel) {
        return;
    }
    lock(&lot.candidates).push((room.clone(), since.wrapping_add(IDLE_TICKS)));
}

/// Parks a connection; `guard` lives on with it.
pub(crate) fn park((tcp, room, inbox, id): Parts, guard: Guard) {
    let Some(lot) = LOT.get() else {
        return;
    };
    let stream = match tcp.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            // The socket is closed: the actor learns the connection is gone.
            debug!(conn = id.slot(), %error, "cannot park: connection closed");
            room.writer_gone();
            closed(inbox, id, guard);
            return;
        }
    };
    let mut parked = lock(&lot.parked);
    if lot.stopped.load(Ordering::Relaxed) {
        // Nobody waits on the set any more (checked under the lock the thread releases
        // every parked connection under).
        drop(parked);
        lot.resume(stream, room, inbox, id, guard);
        return;
    }
    let entry = parked.vacant_entry();
    let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
    let added = u32::try_from(entry.key())
        .map_err(|_| io::Error::other("too many parked connections"))
        .and_then(|key| {
            epoll::add(
                &lot.epoll,
                &stream,
                epoll::EventData::new_u64(key.into()),
                flags,
            )?;
            Ok(key)
        });
    let key = match added {
        Ok(key) => key,
        Err(error) => {
            // Out of epoll watches, say: the connection goes back to a task at once.
            warn!(conn = id.slot(), %error, "cannot park a connection");
            drop(parked);
            lot.resume(stream, room, inbox, id, guard);
            return;
        }
    };
    entry.insert(Box::new(Parked {
        stream,
        room: room.clone(),
        inbox,
        id,
        guard,
    }));
    lot.count.fetch_add(1, Ordering::Relaxed);
    room.first.store(SETTLED, Ordering::Relaxed);
    // Still under the slab's lock: the lot cannot take the entry out (on readiness
    // reported since the socket joined the set) before the room knows it is parked, or
    // the room would name an entry that is gone, and keep its own waker instead of the
    // new task's.
    let at_once = room.park(key);
    drop(parked);
    trace!(conn = id.slot(), "parked");
    if at_once {
        unpark_later(key);
    }
}

/// Brings parked connection `key` back (its room was woken), on the lot's thread.
pub(crate) fn unpark_later(key: u32) {
    let Some(lot) = LOT.get() else {
        return;
    };
    lock(&lot.woken).push(key);
    if !lot.signaled.swap(true, Ordering::AcqRel) {
        // Cannot fail but for a counter at its maximum, which the thread resets.
        let _ = rustix::io::write(&lot.signal, &1u64.to_ne_bytes());
    }
}

/// Tells the actor that connection `id` is gone, once its inbox has room; then drops
/// `guard`.
fn closed(inbox: mpsc::Sender<Input>, id: ConnectionId, guard: Guard) {
    tokio::spawn(async move {
        let _ = inbox.send(Input::Closed(id)).await;
        drop(guard);
    });
}

impl Lot {
    /// The lot's thread: ticks the clock, wakes the candidates whose time has come, and
    /// brings back the connections whose sockets or rooms have something.
    fn run(&self, period: Duration) {
        // Resumed connections register with this runtime's reactor and run on it.
        let _runtime = self.runtime.enter();
        let mut events = Vec::with_capacity(EVENTS);
        let mut next_tick = Instant::now() + period;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let timeout = rustix::event::Timespec {
                tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: wait.subsec_nanos().into(),
            };
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&timeout),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => {
                    warn!(%error, "the parking lot cannot wait: idle connections keep their tasks");
                    self.stopped.store(true, Ordering::Relaxed);
                    // Every parked connection goes back to a task.
                    let keys: Vec<usize> = lock(&self.parked).iter().map(|(key, _)| key).collect();
                    for key in keys {
                        if let Ok(key) = u32::try_from(key) {
                            self.unpark(key);
                        }
                    }
                    return;
                }
            }
            for event in &events {
                match event.data.u64() {
                    SIGNAL => self.take_woken(),
                    key => {
                        if let Ok(key) = u32::try_from(key) {
                            self.unpark(key);
                        }
                    }
                }
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick += period;
            }
        }
    }

    /// Brings back the connections whose rooms were woken.
    fn take_woken(&self) {
        self.signaled.store(false, Ordering::Release);
        // Reset after the flag: a wake-up from now on writes it again.
        let _ = rustix::io::read(&self.signal, &mut [0; 8]);
        let woken = std::mem::take(&mut *lock(&self.woken));
        for key in woken {
            self.unpark(key);
        }
    }

    /// Advances the clock and wakes the candidates whose time has come.
    fn tick(&self) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let mut due = Vec::new();
        let mut candidates = lock(&self.candidates);
        candidates.retain(|(room, at)| {
            // Compared in wrapping arithmetic: the clock may wrap (after years).
            let ready = now.wrapping_sub(*at) < u32::MAX / 2;
            if ready {
                due.push(room.clone());
            }
            !ready
        });
        // After a burst of connections (they all enroll), give the room back.
        if candidates.capacity() > 4 * candidates.len() + 1024 {
            let keep = 2 * candidates.len();
            candidates.shrink_to(keep);
        }
        drop(candidates);
        for room in due {
            room.enrolled.store(false, Ordering::Release);
            room.wake_unless_parked();
        }
    }

    /// Takes parked connection `key` out and gives it a task again (nothing when it is
    /// back already).
    fn unpark(&self, key: u32) {
        let Some(parked) = lock(&self.parked).try_remove(key as usize) else {
            return;
        };
        self.count.fetch_sub(1, Ordering::Relaxed);
        let Parked {
            stream,
            room,
            inbox,
            id,
            guard,
        } = *parked;
        if let Err(error) = epoll::delete(&self.epoll, &stream) {
            debug!(conn = id.slot(), %error, "cannot remove a socket from the parking lot");
        }
        trace!(conn = id.slot(), "unparked");
        self.resume(stream, room, inbox, id, guard);
    }

    /// Spawns a new driver for a connection out of the lot.
    fn resume(
        &self,
        stream: std::net::TcpStream,
        room: Arc<Room>,
        inbox: mpsc::Sender<Input>,
        id: ConnectionId,
        guard: Guard,
    ) {
        room.unparked();
        match TcpStream::from_std(stream) {
            Ok(tcp) => {
                tokio::spawn(crate::transport::resume((tcp, room, inbox, id), guard));
            }
            Err(error) => {
                debug!(conn = id.slot(), %error, "cannot resume a parked connection");
                room.writer_gone();
                closed(inbox, id, guard);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every parked connection costs in the lot, besides its slot's pointer: 40
    /// bytes, so with glibc's header it takes a 48-byte block.
    #[test]
    fn a_parked_connection_is_small() {
        let size = std::mem::size_of::<Parked>();
        assert!(size <= 40, "a parked connection takes {size} bytes");
    }
}
