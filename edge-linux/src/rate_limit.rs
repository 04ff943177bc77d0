//! The per-address connection rate limit of the accept loop (`limits.connection_rate`,
//! `limits.connection_burst`): a token bucket per client address, so one misbehaving
//! device reconnecting in a loop cannot take the broker's accept capacity from the others.
//!
//! IPv6 clients are counted per /64 network (one host commonly holds a whole /64).
//! Memory is bounded: at most [`MAX_TRACKED`] addresses are tracked. When that many are,
//! buckets that have refilled completely (addresses that have been quiet) are forgotten,
//! since they carry no information; if none has, a new address is let through untracked
//! rather than refused, because an attack spread over that many addresses is bounded by
//! `limits.max_connections` anyway, while refusing would lock out honest clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses tracked at most (about 40 bytes each).
pub(crate) const MAX_TRACKED: usize = 16 * 1024;

/// The shortest time between two sweeps for quiet addresses when the map is full, so a
/// full map does not cost a sweep per accepted connection.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Per-address token buckets.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// Tokens added per second; each connection takes one.
    rate: f64,
    /// Bucket size: connections one address may open at once.
    burst: f64,
    /// Whether loopback clients are limited too.
    loopback: bool,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// The last connection was refused (so the next refusal is not logged again).
    refusing: bool,
}

/// What the accept loop does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Serve it.
    Allow,
    /// Close it; this address was allowed its previous connection (the first refusal of
    /// a burst, worth one log line).
    RefuseFirst,
    /// Close it; refused already just before.
    Refuse,
}

impl RateLimit {
    /// `rate` connections per second after a burst of `burst`; `None` when `rate` is 0
    /// (no limit).
    pub(crate) fn new(rate: u32, burst: u16, loopback: bool) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            loopback,
            buckets: HashMap::new(),
            last_sweep: None,
        })
    }

    /// Whether a connection from `ip` accepted at `now` may be served.
    pub(crate) fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        let ip = canonical(ip);
        if ip.is_loopback() && !self.loopback {
            return Verdict::Allow;
        }
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED {
            self.sweep(now);
            if self.buckets.len() >= MAX_TRACKED {
                return Verdict::Allow;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            updated: now,
            refusing: false,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.refusing = false;
            Verdict::Allow
        } else if bucket.refusing {
            Verdict::Refuse
        } else {
            bucket.refusing = true;
            Verdict::RefuseFirst
        }
    }

    /// Forgets the addresses whose buckets are full again.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
    }
}

/// The key an address is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by
/// its /64 network.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.is_loopback() => ip,
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::from(segments)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_burst_then_the_rate() {
        let mut limit = RateLimit::new(2, 3, false).unwrap();
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..5).map(|_| limit.check(A, t0)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Allow,
                Verdict::RefuseFirst,
                Verdict::Refuse
            ]
        );
        // Another address has its own bucket.
        assert_eq!(limit.check(B, t0), Verdict::Allow);
        // Two tokens a second: 1.2 tokens after 600 ms, so one more connection.
        let later = t0 + Duration::from_millis(600);
        assert_eq!(limit.check(A, later), Verdict::Allow);
        assert_eq!(limit.check(A, later), Verdict::RefuseFirst);
        // A long pause refills the bucket to the burst, no more.
        let much_later = later + Duration::from_secs(60);
        let allowed = (0..10)
            .filter(|_| limit.check(A, much_later) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn zero_rate_is_no_limit_and_loopback_is_exempt_unless_asked() {
        assert!(RateLimit::new(0, 10, true).is_none());
        let now = Instant::now();
        let mut limit = RateLimit::new(1, 1, false).unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..10).all(|_| limit.check(local, now) == Verdict::Allow));
        let mut strict = RateLimit::new(1, 1, true).unwrap();
        assert_eq!(strict.check(local, now), Verdict::Allow);
        assert_ne!(strict.check(local, now), Verdict::Allow);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let now = Instant::now();
        let mut limit = RateLimit::new(1, 1, false).unwrap();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit.check(one, now), Verdict::Allow);
        assert_ne!(limit.check(same_64, now), Verdict::Allow);
        assert_eq!(limit.check(other_64, now), Verdict::Allow);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(limit.check(A, now), Verdict::Allow);
        assert_ne!(limit.check(mapped, now), Verdict::Allow);
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut limit = RateLimit::new(1, 1, false).unwrap();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            // Untracked beyond the bound: let through, not refused.
            assert_eq!(limit.check(ip, now), Verdict::Allow);
        }
        assert_eq!(limit.buckets.len(), MAX_TRACKED);
        // Once the tracked addresses have been quiet long enough to refill, they are
        // forgotten and new ones are tracked (and limited) again.
        let later = now + Duration::from_secs(5);
        let fresh = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(limit.check(fresh, later), Verdict::Allow);
        assert_eq!(limit.buckets.len(), 1);
        assert_ne!(limit.check(fresh, later), Verdict::Allow);
    }
}
