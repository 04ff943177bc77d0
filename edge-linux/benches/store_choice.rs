//! Chooses the embedded database behind `fulmar`'s persistence: redb (a copy-on-write
//! B-tree in one file) against fjall (an LSM tree with a journal), on the two things the
//! broker asks of it.
//!
//! 1. **Group commits**: each commit holds what the broker reports for a few QoS 1
//!    messages queued for a persistent subscriber (a put each, ~130-byte values under
//!    session-prefixed keys) plus the deletes of the messages of the previous commit (their
//!    PUBACK came back), made durable (fsync) before the next begins. This is the
//!    acknowledgement path: its commit latency bounds how soon a PUBACK may go out.
//! 2. **Restore**: 100 000 records written, the database closed, then opened again and
//!    every record read, which is what a restart does before the listeners accept.
//!
//! Run with `cargo bench -p fulmar-edge --features bench-fjall` (in a directory on the disk
//! the broker will use: `FULMAR_BENCH_DIR`, default the system temporary directory). It
//! prints one line per measurement; the README's Persistence section records the figures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Puts (and deletes) per commit at each measured size.
const BATCH_SIZES: [usize; 3] = [1, 16, 256];
/// How long each commit measurement runs.
const COMMIT_RUN: Duration = Duration::from_secs(3);
/// Records written, then restored.
const RESTORE_RECORDS: u64 = 100_000;

const TABLE: redb::TableDefinition<'static, &[u8], &[u8]> = redb::TableDefinition::new("state");

/// One broker-shaped record: a message key of session `client` and a value of about the
/// size of a small PUBLISH as the core stores it.
fn record(client: u64, seq: u64) -> (Vec<u8>, Vec<u8>) {
    let mut key = b"S\x0csensor-".to_vec();
    key.extend_from_slice(format!("{:05}", client % 100_000).as_bytes());
    key.push(2);
    key.extend_from_slice(&seq.to_be_bytes());
    let mut value = vec![1u8; 130];
    value[1..9].copy_from_slice(&seq.to_le_bytes());
    (key, value)
}

/// The two databases behind one interface.
trait Db {
    /// Puts `puts` and deletes `deletes` in one durable commit.
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]);
    /// Reads every record; returns how many and their total size.
    fn scan(&self) -> (u64, u64);
}

struct Redb(redb::Database);

impl Redb {
    fn open(path: &Path) -> Self {
        let db = redb::Database::create(path.join("redb.db")).expect("open redb");
        let txn = db.begin_write().expect("begin");
        txn.open_table(TABLE).expect("table");
        txn.commit().expect("commit");
        Self(db)
    }
}

impl Db for Redb {
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) {
        let txn = self.0.begin_write().expect("begin");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            for (k, v) in puts {
                table.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
            for k in deletes {
                table.remove(k.as_slice()).expect("remove");
            }
        }
        // The default durability: durable when commit returns.
        txn.commit().expect("commit");
    }

    fn scan(&self) -> (u64, u64) {
        use redb::{ReadableDatabase, ReadableTable};
        let txn = self.0.begin_read().expect("begin read");
        let table = txn.open_table(TABLE).expect("table");
        let mut n = 0;
        let mut bytes = 0;
        for entry in table.iter().expect("iter") {
            let (k, v) = entry.expect("entry");
            n += 1;
            bytes += (k.value().len() + v.value().len()) as u64;
        }
        (n, bytes)
    }
}

struct Fjall {
    db: fjall::Database,
    state: fjall::Keyspace,
}

impl Fjall {
    fn open(path: &Path) -> Self {
        let db = fjall::Database::builder(path.join("fjall"))
            .open()
            .expect("open fjall");
        let state = db
            .keyspace("state", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        Self { db, state }
    }
}

impl Db for Fjall {
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) {
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for (k, v) in puts {
            batch.insert(&self.state, k.as_slice(), v.as_slice());
        }
        for k in deletes {
            batch.remove(&self.state, k.as_slice());
        }
        batch.commit().expect("commit");
    }

    fn scan(&self) -> (u64, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for guard in self.state.iter() {
            let (k, v) = guard.into_inner().expect("entry");
            n += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        (n, bytes)
    }
}

fn scratch(name: &str) -> PathBuf {
    let base = std::env::var_os("FULMAR_BENCH_DIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(format!("fulmar-store-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("create the bench directory");
    base
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Durable commits of `batch` puts plus the deletes of the previous commit's keys.
fn commits(name: &str, db: &mut dyn Db, batch: usize) {
    let mut seq = 0u64;
    let mut previous: Vec<Vec<u8>> = Vec::new();
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < COMMIT_RUN {
        let puts: Vec<_> = (0..batch)
            .map(|i| {
                seq += 1;
                record(i as u64, seq)
            })
            .collect();
        let t = Instant::now();
        db.commit(&puts, &previous);
        latencies.push(t.elapsed());
        previous = puts.into_iter().map(|(k, _)| k).collect();
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let n = latencies.len();
    let p = |q: f64| latencies[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e3;
    println!(
        "{name:5} commit batch={batch:3}: {:7.0} commits/s {:8.0} messages/s  latency p50 {:.2} ms p99 {:.2} ms",
        n as f64 / elapsed,
        (n * batch) as f64 / elapsed,
        p(0.5),
        p(0.99),
    );
}

fn restore<D: Db>(name: &str, open: impl Fn(&Path) -> D) {
    let dir = scratch(&format!("{name}-restore"));
    {
        let mut db = open(&dir);
        let mut seq = 0;
        while seq < RESTORE_RECORDS {
            let puts: Vec<_> = (0..10_000)
                .map(|i| {
                    seq += 1;
                    record(i, seq)
                })
                .collect();
            db.commit(&puts, &[]);
        }
    }
    let started = Instant::now();
    let db = open(&dir);
    let opened = started.elapsed();
    let (n, bytes) = db.scan();
    let total = started.elapsed();
    assert_eq!(n, RESTORE_RECORDS);
    println!(
        "{name:5} restore {n} records ({:.1} MB of keys and values, {:.1} MB on disk): open {:.1} ms, open + read all {:.1} ms",
        bytes as f64 / 1e6,
        dir_size(&dir) as f64 / 1e6,
        opened.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    for batch in BATCH_SIZES {
        let dir = scratch("redb");
        commits("redb", &mut Redb::open(&dir), batch);
        let _ = std::fs::remove_dir_all(&dir);
        let dir = scratch("fjall");
        commits("fjall", &mut Fjall::open(&dir), batch);
        let _ = std::fs::remove_dir_all(&dir);
    }
    restore("redb", Redb::open);
    restore("fjall", Fjall::open);
}
