//! What the load tool measures: the stamp every payload starts with, the per-subscriber
//! tally of what arrived (duplicates, losses, latency), and the summaries it prints.
//!
//! ## The stamp
//! Every PUBLISH payload starts with [`STAMP_LEN`] bytes, big-endian:
//! `send time (u64 ns since the Unix epoch) | run id (u32) | publisher (u32) | seq (u64)`,
//! then zero padding up to `--size`. The send time gives the end-to-end latency (wall
//! clock, so `fulmar bench pub` and `fulmar bench sub` may be separate processes on one
//! machine); publisher and sequence number identify the message, so a subscriber can tell a
//! duplicate from a new message and count what never came; the run id tells this run's
//! messages from any other traffic on the same topics.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of the stamp at the start of every payload: the smallest `--size`.
pub(crate) const STAMP_LEN: usize = 24;

/// Publishers a subscriber keeps a tally for; a stamp naming a higher index is counted as
/// foreign rather than allocating for it.
const MAX_PUBLISHERS: u32 = 1 << 20;

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A number that differs from one run to the next (time and process id), to tell this
/// run's messages and client ids from another's. Not random and need not be.
pub(crate) fn run_id() -> u32 {
    let nanos = wall_nanos();
    (nanos as u32) ^ ((nanos >> 32) as u32) ^ std::process::id().rotate_left(16)
}

/// The identity and send time of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) sent_nanos: u64,
    pub(crate) run: u32,
    pub(crate) publisher: u32,
    pub(crate) seq: u64,
}

impl Stamp {
    /// Writes the stamp over the first [`STAMP_LEN`] bytes of `payload`, which must be at
    /// least that long.
    pub(crate) fn write(&self, payload: &mut [u8]) {
        payload[0..8].copy_from_slice(&self.sent_nanos.to_be_bytes());
        payload[8..12].copy_from_slice(&self.run.to_be_bytes());
        payload[12..16].copy_from_slice(&self.publisher.to_be_bytes());
        payload[16..24].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Reads the stamp at the start of `payload`; `None` if it is too short.
    pub(crate) fn read(payload: &[u8]) -> Option<Self> {
        let field = |range: std::ops::Range<usize>| payload.get(range);
        Some(Self {
            sent_nanos: u64::from_be_bytes(field(0..8)?.try_into().ok()?),
            run: u32::from_be_bytes(field(8..12)?.try_into().ok()?),
            publisher: u32::from_be_bytes(field(12..16)?.try_into().ok()?),
            seq: u64::from_be_bytes(field(16..24)?.try_into().ok()?),
        })
    }
}

/// What one subscriber received.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Only messages of this run count; `None` counts every stamped message.
    run: Option<u32>,
    /// Per publisher index, one bit per sequence number seen.
    seen: Vec<Vec<u64>>,
    /// Messages received, duplicates included.
    pub(crate) received: u64,
    /// Distinct messages received.
    pub(crate) unique: u64,
    /// Messages received again (same publisher and sequence number).
    pub(crate) duplicates: u64,
    /// Messages without this run's stamp.
    pub(crate) foreign: u64,
    /// End-to-end latency of every first delivery, in microseconds.
    pub(crate) latencies_us: Vec<u32>,
}

impl Tally {
    /// A tally counting only messages of run `run` (all stamped messages for `None`).
    pub(crate) fn new(run: Option<u32>) -> Self {
        Self {
            run,
            ..Self::default()
        }
    }

    /// Records one received payload, at `now_nanos` (wall clock).
    pub(crate) fn record(&mut self, payload: &[u8], now_nanos: u64) {
        let Some(stamp) = Stamp::read(payload) else {
            self.foreign += 1;
            return;
        };
        if self.run.is_some_and(|run| run != stamp.run) || stamp.publisher >= MAX_PUBLISHERS {
            self.foreign += 1;
            return;
        }
        self.received += 1;
        let publisher = stamp.publisher as usize;
        if self.seen.len() <= publisher {
            self.seen.resize_with(publisher + 1, Vec::new);
        }
        let bits = &mut self.seen[publisher];
        let (word, bit) = ((stamp.seq / 64) as usize, stamp.seq % 64);
        if bits.len() <= word {
            // Sequence numbers are dense from 0, so this grows with what was sent.
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        bits[word] |= 1 << bit;
        self.unique += 1;
        let micros = now_nanos.saturating_sub(stamp.sent_nanos) / 1000;
        self.latencies_us
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    /// Messages missing per publisher, judged by the highest sequence number seen: the
    /// holes below it. (Messages after the last one seen cannot be known from here; the
    /// `pubsub` driver, which knows what was sent, counts those too.)
    pub(crate) fn holes(&self) -> u64 {
        self.seen
            .iter()
            .map(|bits| {
                let Some(last_word) = bits.iter().rposition(|w| *w != 0) else {
                    return 0;
                };
                let highest =
                    last_word as u64 * 64 + 63 - u64::from(bits[last_word].leading_zeros());
                let seen: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
                highest + 1 - seen
            })
            .sum()
    }

    /// Adds `other`'s counts and latencies to this one (the seen-sets stay per subscriber).
    pub(crate) fn absorb(&mut self, other: Tally) {
        self.received += other.received;
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Latency {
    pub(crate) p50: u32,
    pub(crate) p99: u32,
    pub(crate) max: u32,
}

impl Latency {
    /// The percentiles of `samples` (sorted in place); `None` when there are none.
    pub(crate) fn of(samples: &mut [u32]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        // Nearest rank: the smallest sample at or above the given share of all samples.
        let rank = |percent: usize| {
            let index = (samples.len() * percent).div_ceil(100).saturating_sub(1);
            samples[index.min(samples.len() - 1)]
        };
        Some(Self {
            p50: rank(50),
            p99: rank(99),
            max: samples[samples.len() - 1],
        })
    }
}

/// Formats microseconds for people: `850us`, `12.3ms`, `1.20s`.
pub(crate) fn human_micros(micros: u32) -> String {
    match micros {
        0..1_000 => format!("{micros}us"),
        1_000..1_000_000 => format!("{:.1}ms", f64::from(micros) / 1e3),
        _ => format!("{:.2}s", f64::from(micros) / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(run: u32, publisher: u32, seq: u64, sent_nanos: u64) -> Vec<u8> {
        let mut payload = vec![0; 64];
        Stamp {
            sent_nanos,
            run,
            publisher,
            seq,
        }
        .write(&mut payload);
        payload
    }

    #[test]
    fn stamp_round_trips() {
        let stamp = Stamp {
            sent_nanos: 1_700_000_000_123_456_789,
            run: 7,
            publisher: 499,
            seq: 1 << 40,
        };
        let mut payload = [0xAA; STAMP_LEN];
        stamp.write(&mut payload);
        assert_eq!(Stamp::read(&payload), Some(stamp));
        assert_eq!(Stamp::read(&payload[..STAMP_LEN - 1]), None);
    }

    #[test]
    fn tally_counts_duplicates_holes_and_foreign_messages() {
        let mut tally = Tally::new(Some(1));
        for seq in [0, 1, 3, 1, 70] {
            tally.record(&payload(1, 2, seq, 1_000_000), 3_500_000);
        }
        tally.record(&payload(9, 2, 5, 0), 0);
        tally.record(b"short", 0);
        assert_eq!(tally.received, 5);
        assert_eq!(tally.unique, 4);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.foreign, 2);
        // 0..=70 is 71 numbers, 4 of them seen.
        assert_eq!(tally.holes(), 67);
        assert_eq!(tally.latencies_us, [2500; 4]);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<u32> = (1..=1000).rev().collect();
        let latency = Latency::of(&mut samples).unwrap();
        assert_eq!(
            latency,
            Latency {
                p50: 500,
                p99: 990,
                max: 1000
            }
        );
        assert_eq!(Latency::of(&mut []), None);
        assert_eq!(Latency::of(&mut [7]).unwrap().p99, 7);
    }

    #[test]
    fn micros_read_well() {
        assert_eq!(human_micros(850), "850us");
        assert_eq!(human_micros(12_345), "12.3ms");
        assert_eq!(human_micros(1_200_000), "1.20s");
    }
}
