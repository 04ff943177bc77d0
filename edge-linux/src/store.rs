//! Persistence: the broker's durable state in a redb database under the data directory,
//! restored at start, and the group commit that lets acknowledgements wait for it.
//!
//! The core says what to store ([`Broker::poll_persist`] yields [`PersistOp`]s: puts and
//! deletes of postcard records, a session's range delete, a reset) and rebuilds itself from
//! stored records ([`Broker::restore`]). This module keeps those records in one redb table
//! in `<data_dir>/fulmar.redb`, in the core's key order (a session's records share a key
//! prefix, so `DeleteSession` is one range delete).
//!
//! ## Durable acknowledgements
//! A PUBACK or PUBREC tells a publisher it may forget its message, so it may leave only
//! once what the broker did with the message is on disk (architecture invariant 1). The
//! broker actor therefore tags every chunk of output with the commit that must be durable
//! before it leaves (`Committer::hold_until`): the commit holding every op polled before
//! the chunk was produced. Output that depends on nothing unsaved leaves at once.
//!
//! Commits run on a thread of their own (`Store::start`), never on the runtime, and at
//! most one is in flight: the ops of every input handled meanwhile wait in the next batch,
//! which starts as soon as the current one is durable. That is the group commit of
//! [`SyncPolicy::Batch`]: under load one fsync covers many inputs, and no acknowledgement
//! waits longer than two commits (one fsync each, a few milliseconds on an SSD or SD card).
//! [`SyncPolicy::Always`] commits after every input before the actor takes the next one
//! (one fsync per input, for the paranoid); [`SyncPolicy::None`] never holds output and
//! commits without fsync, making the state durable once a second and at shutdown (a crash
//! may lose the last second).
//!
//! ## Time
//! Stored times are the core's milliseconds. The actor counts them from the Unix epoch (see
//! `broker_task`), so session expiry and will delays keep running across restarts.

use std::ops::Bound;
use std::path::PathBuf;
use std::time::{Duration, Instant as StdInstant};

use fulmar_core::broker::{Broker, BrokerStorage, Hooks, PersistOp};
use fulmar_core::persist::PersistError;
use fulmar_core::time::Instant;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::shards::Part;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "fulmar.redb";

/// Every record of the core, keyed by the core's keys.
const STATE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("state");

/// redb's page cache. Its default (1 GiB) is the whole memory of a small Raspberry Pi;
/// the broker keeps its working state in the core, so the cache only serves commits.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// With [`SyncPolicy::None`], how often the writer makes its commits durable.
const NONE_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Ops bytes the actor may accumulate while a commit is in flight before it stops taking
/// input until the commit ends: bounds memory when the disk is slower than the clients.
pub(crate) const MAX_OPEN_BYTES: usize = 8 * 1024 * 1024;

/// After a failed commit (disk full, I/O error), how long the writer waits before trying
/// again. Output that waits for the commit stays held meanwhile: nothing unsaved is ever
/// acknowledged.
const RETRY: Duration = Duration::from_secs(1);

/// When output waits for the disk (`persistence.sync` in `fulmar.toml`: `"always"`,
/// `"batch"` or `"none"`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SyncPolicy {
    /// One durable commit (fsync) per input, before the broker handles the next one.
    Always,
    /// Group commit: ops of many inputs share one durable commit; acknowledgements wait for
    /// it (at most about two fsyncs).
    #[default]
    Batch,
    /// Never wait for the disk; commits become durable once a second and at shutdown.
    None,
}

/// Where and how the broker keeps its state (from [`crate::Config::store_settings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Keep sessions, subscriptions, retained and queued messages across restarts.
    pub enabled: bool,
    /// Directory of the database ([`DATABASE_FILE`]), created if missing.
    pub data_dir: PathBuf,
    /// When acknowledgements wait for the disk.
    pub sync: SyncPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            data_dir: PathBuf::from(crate::config::DEFAULT_DATA_DIR),
            sync: SyncPolicy::default(),
        }
    }
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened (another broker holds it, or it is damaged).
    #[error("cannot open the database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
    /// Reading or writing the database failed.
    #[error("database error: {0}")]
    Database(#[from] Box<redb::Error>),
}

fn db_error(error: impl Into<redb::Error>) -> Error {
    Error::Database(Box::new(error.into()))
}

/// One write, owned: what a [`PersistOp`] says, kept until its commit.
#[derive(Debug)]
enum Op {
    Put(Box<[u8]>, Box<[u8]>),
    Delete(Box<[u8]>),
    DeletePrefix(Box<[u8]>),
    Reset,
}

impl Op {
    fn of(op: PersistOp<'_>) -> Self {
        match op {
            PersistOp::Put { key, value } => Self::Put(key.into(), value.into()),
            PersistOp::Delete { key } => Self::Delete(key.into()),
            PersistOp::DeleteSession { prefix } => Self::DeletePrefix(prefix.into()),
            PersistOp::Reset => Self::Reset,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Put(k, v) => k.len() + v.len(),
            Self::Delete(k) | Self::DeletePrefix(k) => k.len(),
            Self::Reset => 0,
        }
    }
}

/// The opened database.
#[derive(Debug)]
pub(crate) struct Store {
    /// Shared by the shards' stores ([`Store::share`]): each commits its own records.
    db: std::sync::Arc<redb::Database>,
    path: PathBuf,
    sync: SyncPolicy,
    /// The records this store's broker writes, when it is one shard of several: its
    /// reset clears only those.
    part: Option<Part>,
}

impl Store {
    /// Opens (or creates) the database in `settings.data_dir`.
    pub(crate) fn open(settings: &Settings) -> Result<Self, Error> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| Error::DataDir {
            path: settings.data_dir.clone(),
            source,
        })?;
        let path = settings.data_dir.join(DATABASE_FILE);
        let open_error = |e: redb::Error| Error::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| open_error(e.into()))?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(STATE).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(Self {
            db: std::sync::Arc::new(db),
            path,
            sync: settings.sync,
            part: None,
        })
    }

    /// The same database for a shard's broker (`part`; `None`: the only broker), with its
    /// own writer thread.
    pub(crate) fn share(&self, part: Option<Part>) -> Self {
        Self {
            db: self.db.clone(),
            path: self.path.clone(),
            sync: self.sync,
            part,
        }
    }

    /// Hands every stored record to the core; call before the listeners accept. A record
    /// the core cannot take (written by a newer version, or beyond the configured limits)
    /// is skipped with a warning rather than stopping the broker.
    /// Only the records `keep` accepts are restored (a shard takes its own sessions'
    /// records and every retained message).
    pub(crate) fn restore_where<S: BrokerStorage, H: Hooks>(
        &self,
        broker: &mut Broker<S, H>,
        now: Instant,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<(), Error> {
        let started = StdInstant::now();
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(STATE).map_err(db_error)?;
        let (mut restored, mut skipped) = (0u64, 0u64);
        for entry in table.iter().map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            if !keep(key.value()) {
                continue;
            }
            match broker.restore(key.value(), value.value(), now) {
                Ok(()) => restored += 1,
                Err(error) => {
                    skipped += 1;
                    if skipped <= 10 {
                        warn!(%error, key = ?String::from_utf8_lossy(key.value()), "stored record skipped");
                    }
                }
            }
        }
        info!(
            path = %self.path.display(),
            shard = self.part.map(|p| p.index),
            restored,
            skipped,
            ms = started.elapsed().as_millis() as u64,
            sync = ?self.sync,
            "state restored"
        );
        Ok(())
    }

    /// Starts the writer thread; the returned [`Committer`] feeds it.
    pub(crate) fn start(self) -> std::io::Result<Committer> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (done, completions) = mpsc::unbounded_channel();
        let sync = self.sync;
        let writer = std::thread::Builder::new()
            .name("fulmar-store".into())
            .spawn(move || self.write_loop(&queue, &done))?;
        Ok(Committer {
            sync,
            open: Vec::new(),
            open_bytes: 0,
            next: 1,
            in_flight: None,
            durable: 0,
            needed: 0,
            jobs: Some(jobs),
            completions,
            writer: Some(writer),
            buf: vec![0; 4096],
        })
    }

    /// The writer thread: commits each job in order and reports it. Ends when the actor
    /// drops its sender, after a last durable commit.
    fn write_loop(self, queue: &std::sync::mpsc::Receiver<Job>, done: &mpsc::UnboundedSender<u64>) {
        // With SyncPolicy::None, commits are not durable; this says whether one is pending.
        let mut unsynced = false;
        let mut last_sync = StdInstant::now();
        loop {
            let job = match queue.recv_timeout(NONE_SYNC_INTERVAL) {
                Ok(job) => job,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Job {
                    id: 0,
                    ops: Vec::new(),
                    durable: unsynced,
                },
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let durable = job.durable
                || (unsynced && last_sync.elapsed() >= NONE_SYNC_INTERVAL)
                || self.sync != SyncPolicy::None;
            if job.ops.is_empty() && !durable {
                continue;
            }
            while let Err(error) = self.commit(&job.ops, durable) {
                error!(%error, "commit failed; retrying (acknowledgements wait)");
                std::thread::sleep(RETRY);
            }
            if durable {
                unsynced = false;
                last_sync = StdInstant::now();
            } else {
                unsynced = true;
            }
            if job.id != 0 && done.send(job.id).is_err() {
                break;
            }
        }
        if unsynced && let Err(error) = self.commit(&[], true) {
            error!(%error, "last commit failed");
        }
    }

    /// Applies `ops` in order in one transaction.
    fn commit(&self, ops: &[Op], durable: bool) -> Result<(), Error> {
        let mut txn = self.db.begin_write().map_err(db_error)?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(db_error)?;
        }
        {
            let mut table = txn.open_table(STATE).map_err(db_error)?;
            for op in ops {
                match op {
                    Op::Put(key, value) => {
                        table.insert(&**key, &**value).map_err(db_error)?;
                    }
                    Op::Delete(key) => {
                        table.remove(&**key).map_err(db_error)?;
                    }
                    Op::DeletePrefix(prefix) => {
                        let end = successor(prefix);
                        let start: &[u8] = prefix;
                        let range: (Bound<&[u8]>, Bound<&[u8]>) = (
                            Bound::Included(start),
                            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                        );
                        table
                            .retain_in::<&[u8], _>(range, |_, _| false)
                            .map_err(db_error)?;
                    }
                    // A shard's reset clears its own records: the other shards' are
                    // theirs to keep.
                    Op::Reset => table
                        .retain(|key, _| self.part.is_some_and(|part| !part.writes(key)))
                        .map_err(db_error)?,
                }
            }
        }
        txn.commit().map_err(db_error)
    }
}

/// Whether `op` is about a retained `$SYS` topic. The broker republishes those itself
/// (`metrics::sys`), so storing them would only wear the disk (an SD card, often) every
/// `--sys-interval` and make every acknowledgement wait for those commits, and a restart
/// would bring back the previous run's figures. Mosquitto does not store them either.
fn regenerated(op: &PersistOp<'_>) -> bool {
    let (PersistOp::Put { key, .. } | PersistOp::Delete { key }) = op else {
        return false;
    };
    key.starts_with(b"R$SYS/")
}

/// The smallest key above every key that starts with `prefix`, if there is one.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A batch of ops for the writer thread.
#[derive(Debug)]
struct Job {
    /// Reported back once committed; 0 for the writer's own syncs.
    id: u64,
    ops: Vec<Op>,
    durable: bool,
}

/// The actor's side of the store: collects the core's ops, runs group commits on the
/// writer thread, and says which output must wait for which commit.
///
/// Commits are numbered from 1; `durable` is the last one on disk. Output produced after
/// ops were polled into commit `n` waits until `durable >= n`.
#[derive(Debug)]
pub(crate) struct Committer {
    sync: SyncPolicy,
    /// Ops polled since the last commit started; they form commit `next`.
    open: Vec<Op>,
    open_bytes: usize,
    next: u64,
    in_flight: Option<u64>,
    durable: u64,
    /// The commit holding the latest polled op.
    needed: u64,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    completions: mpsc::UnboundedReceiver<u64>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Reused for every `poll_persist`.
    buf: Vec<u8>,
}

impl Committer {
    /// The configured policy.
    pub(crate) fn sync(&self) -> SyncPolicy {
        self.sync
    }

    /// Takes every op the core has into the open batch.
    pub(crate) fn collect<S: BrokerStorage, H: Hooks>(&mut self, broker: &mut Broker<S, H>) {
        loop {
            match broker.poll_persist(&mut self.buf) {
                Ok(Some(op)) if regenerated(&op) => {}
                Ok(Some(op)) => {
                    let op = Op::of(op);
                    self.open_bytes += op.bytes();
                    self.open.push(op);
                    self.needed = self.next;
                }
                Ok(None) => return,
                // Nothing is lost: the same op comes again with a larger buffer.
                Err(PersistError::BufferTooSmall { required }) => {
                    let size = required.max(self.buf.len() * 2);
                    self.buf.resize(size, 0);
                }
                Err(error) => {
                    // The core does not return other errors from poll_persist; if it ever
                    // did, stopping here keeps the broker running with the op pending.
                    error!(%error, "cannot render a persistence record");
                    return;
                }
            }
        }
    }

    /// The commit output produced now must wait for, or `None` if it may leave at once.
    pub(crate) fn hold_until(&self) -> Option<u64> {
        (self.sync != SyncPolicy::None && self.needed > self.durable).then_some(self.needed)
    }

    /// The last durable commit.
    pub(crate) fn durable(&self) -> u64 {
        self.durable
    }

    /// Whether the actor should stop taking input until the commit in flight ends.
    pub(crate) fn saturated(&self) -> bool {
        self.in_flight.is_some() && self.open_bytes >= MAX_OPEN_BYTES
    }

    /// Starts committing the open batch if no commit is in flight and it holds anything.
    pub(crate) fn start_commit(&mut self) {
        if self.in_flight.is_some() || self.open.is_empty() {
            return;
        }
        let id = self.next;
        let job = Job {
            id,
            ops: std::mem::take(&mut self.open),
            durable: self.sync != SyncPolicy::None,
        };
        self.open_bytes = 0;
        self.next += 1;
        if let Some(jobs) = &self.jobs
            && jobs.send(job).is_ok()
        {
            self.in_flight = Some(id);
        } else {
            error!("the store's writer thread is gone; state is no longer saved");
        }
    }

    /// Waits for the commit in flight (pending forever if there is none).
    pub(crate) async fn completion(&mut self) -> u64 {
        if self.in_flight.is_none() {
            return std::future::pending().await;
        }
        match self.completions.recv().await {
            Some(id) => id,
            None => std::future::pending().await,
        }
    }

    /// A completion, if one has arrived.
    pub(crate) fn try_completion(&mut self) -> Option<u64> {
        self.in_flight?;
        self.completions.try_recv().ok()
    }

    /// Records that commit `id` is done.
    pub(crate) fn completed(&mut self, id: u64) {
        if self.in_flight == Some(id) {
            self.in_flight = None;
        }
        if self.sync != SyncPolicy::None {
            self.durable = self.durable.max(id);
        }
    }

    /// Commits everything polled so far and waits until it is done.
    pub(crate) async fn commit_all(&mut self) {
        while self.in_flight.is_some() || !self.open.is_empty() {
            if self.in_flight.is_none() {
                self.start_commit();
                if self.in_flight.is_none() {
                    return;
                }
            }
            let id = self.completion().await;
            self.completed(id);
        }
    }

    /// Stops the writer thread after its last durable commit and waits for it, on a
    /// blocking thread.
    pub(crate) async fn close(mut self) {
        self.commit_all().await;
        // Dropping the sender ends the writer's loop; it syncs what is not durable yet.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        if self.sync == SyncPolicy::None {
            self.durable = self.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_bounds_a_prefix() {
        assert_eq!(successor(b"S\x02ab"), Some(b"S\x02ac".to_vec()));
        assert_eq!(successor(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff"), None);
    }

    #[test]
    fn sys_topics_are_not_stored() {
        let put = |key: &'static [u8]| PersistOp::Put { key, value: b"v" };
        assert!(regenerated(&put(b"R$SYS/broker/uptime")));
        assert!(regenerated(&PersistOp::Delete {
            key: b"R$SYS/broker/clients/connected"
        }));
        assert!(!regenerated(&put(b"Rsensors/$SYS/x")));
        assert!(!regenerated(&put(b"S\x05$SYS/\x00")));
        assert!(!regenerated(&PersistOp::Reset));
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fulmar-store-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn keys(store: &Store) -> Vec<Vec<u8>> {
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(STATE).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_vec())
            .collect()
    }

    #[test]
    fn a_shards_reset_clears_its_own_records_only() {
        use fulmar_core::persist::Key;
        let dir = scratch("shard-reset");
        let settings = Settings {
            data_dir: dir.clone(),
            ..Settings::default()
        };
        let store = Store::open(&settings).unwrap();
        let key = |k: Key<'_>| {
            let mut buf = [0u8; 64];
            let n = k.encode(&mut buf).unwrap();
            buf[..n].to_vec()
        };
        let parts = [0, 1].map(|index| Part { index, count: 2 });
        // Records of both shards: sessions by client, retained topics by owner.
        let mut owned = [Vec::new(), Vec::new()];
        for i in 0..16 {
            let client = format!("c{i}");
            let topic = format!("t/{i}");
            for k in [key(Key::Session(&client)), key(Key::Retained(&topic))] {
                let owner = parts.iter().position(|p| p.writes(&k)).unwrap();
                assert!(!parts[1 - owner].writes(&k), "one writer per record");
                owned[owner].push(k);
            }
        }
        assert!(owned.iter().all(|o| !o.is_empty()));
        let ops: Vec<Op> = owned
            .iter()
            .flatten()
            .map(|k| Op::Put(k.as_slice().into(), b"v".as_slice().into()))
            .collect();
        store.commit(&ops, true).unwrap();
        let shard0 = store.share(Some(parts[0]));
        shard0.commit(&[Op::Reset], true).unwrap();
        let mut left = keys(&store);
        left.sort();
        let mut expected = owned[1].clone();
        expected.sort();
        assert_eq!(left, expected, "shard 1's records survive shard 0's reset");
        drop((store, shard0));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ops_apply_in_order_with_prefix_deletes_and_reset() {
        let dir = scratch("ops");
        let settings = Settings {
            data_dir: dir.clone(),
            ..Settings::default()
        };
        let store = Store::open(&settings).unwrap();
        let put = |k: &[u8]| Op::Put(k.into(), b"v".as_slice().into());
        store
            .commit(
                &[
                    put(b"S\x02ab\x00"),
                    put(b"S\x02ab\x01x"),
                    put(b"S\x02ac\x00"),
                    put(b"S\x03abc\x00"),
                    put(b"Rt"),
                    Op::Delete(b"Rt".as_slice().into()),
                    put(b"Ru"),
                ],
                true,
            )
            .unwrap();
        store
            .commit(&[Op::DeletePrefix(b"S\x02ab".as_slice().into())], true)
            .unwrap();
        assert_eq!(
            keys(&store),
            [
                b"Ru".to_vec(),
                b"S\x02ac\x00".to_vec(),
                b"S\x03abc\x00".to_vec()
            ]
        );
        store.commit(&[Op::Reset, put(b"Rz")], false).unwrap();
        assert_eq!(keys(&store), [b"Rz".to_vec()]);
        drop(store);
        // A second broker on the same directory is refused while the first holds it, and
        // the data is there once it is closed.
        let store = Store::open(&settings).unwrap();
        assert!(matches!(Store::open(&settings), Err(Error::Open { .. })));
        assert_eq!(keys(&store), [b"Rz".to_vec()]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
