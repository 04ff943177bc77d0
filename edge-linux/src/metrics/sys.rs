//! The `$SYS/broker/...` topics, with the names and payload formats of Mosquitto's
//! (`man 8 mosquitto`, "BROKER STATUS"), so dashboards and scripts written for Mosquitto
//! read Fulmar unchanged.
//!
//! Every `sys_interval` the task that owns the broker calls [`SysTree::publish_if_due`],
//! which publishes each topic whose value changed since the last time (as Mosquitto does)
//! as a retained QoS 0 message through [`Broker::publish`]: a client subscribing later gets
//! the current values at once. `$SYS/broker/version` is published once, at the first tick.
//! No topic is sent when the interval is zero.
//!
//! Wildcard subscriptions that start with `#` or `+` do not match `$SYS/...`
//! ([MQTT-4.7.2-1]); the core's router enforces that, so `mosquitto_sub -t '#'` never sees
//! these.
//!
//! The `load/.../1min|5min|15min` topics are Mosquitto's moving averages: a per-minute rate
//! measured over each interval, smoothed exponentially with a time constant of 1, 5 or 15
//! minutes (as `uptime`'s load averages are).
//!
//! Not published: `heap/...` (Fulmar uses the system allocator, which does not count its
//! bytes; the Prometheus endpoint gives the resident set size instead), `clients/expired`
//! and `messages/inflight` (the core does not count them separately yet),
//! `store/messages/bytes`, and `connection/...` (no bridges yet).

use std::collections::HashMap;
use std::time::Duration;

use fulmar_core::broker::{Broker, BrokerStorage, Hooks};
use fulmar_core::codec::QoS;
use fulmar_core::time::Instant;
use tokio::time::Instant as Clock;
use tracing::debug;

use super::{Metrics, Snapshot};

/// Windows of the moving averages, with their topic suffixes.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// Reads one total from a snapshot.
type Read = fn(&Snapshot) -> u64;

/// The quantities `load/...` averages, by topic stem, and how to read each from a
/// snapshot.
const LOADS: [(&str, Read); 9] = [
    ("messages/received", |s| s.packets_received),
    ("messages/sent", |s| s.packets_sent),
    ("publish/received", |s| s.messages_received),
    ("publish/sent", |s| s.messages_sent),
    ("publish/dropped", Snapshot::dropped),
    ("bytes/received", |s| s.bytes_received),
    ("bytes/sent", |s| s.bytes_sent),
    ("connections", |s| s.connects),
    ("sockets", |s| s.connections_accepted),
];

/// Publishes the `$SYS/broker/...` topics. See the [module documentation](self).
#[derive(Debug)]
pub struct SysTree {
    interval: Duration,
    /// When the next publication is due; `None` when `$SYS` is off.
    next: Option<Clock>,
    /// The counters and time of the previous publication, for the rates.
    previous: Option<(Snapshot, Clock)>,
    /// Moving averages, `[window][quantity]`, in events per minute.
    loads: [[f64; LOADS.len()]; WINDOWS.len()],
    /// The payload last published on each topic.
    published: HashMap<String, String>,
}

impl SysTree {
    /// Publishes every `interval` (none when zero), the first time at `start`.
    pub fn new(interval: Duration, start: Clock) -> Self {
        Self {
            interval,
            next: (!interval.is_zero()).then_some(start),
            previous: None,
            loads: [[0.0; LOADS.len()]; WINDOWS.len()],
            published: HashMap::new(),
        }
    }

    /// When [`SysTree::publish_if_due`] has something to do next.
    pub fn next_due(&self) -> Option<Clock> {
        self.next
    }

    /// Publishes the topics if they are due at `at`; returns whether it published anything
    /// (then the broker has output to send). `now` is the broker's time. `metrics` must
    /// hold the core's counters already ([`Metrics::record_core`], or the sum of every
    /// shard's).
    pub fn publish_if_due<S: BrokerStorage, H: Hooks>(
        &mut self,
        broker: &mut Broker<S, H>,
        metrics: &Metrics,
        at: Clock,
        now: Instant,
    ) -> bool {
        match self.next {
            Some(due) if due <= at => {
                // A broker too busy to tick on time skips the missed ticks, no burst.
                let next = due + self.interval;
                self.next = Some(if next <= at { at + self.interval } else { next });
            }
            _ => return false,
        }
        let snapshot = metrics.snapshot();
        self.update_loads(&snapshot, at);
        let mut any = false;
        for (topic, payload) in self.topics(&snapshot) {
            if self.published.get(&topic) == Some(&payload) {
                continue;
            }
            match broker.publish(&topic, payload.as_bytes(), QoS::AtMostOnce, true, now) {
                Ok(()) => {
                    any = true;
                    self.published.insert(topic, payload);
                }
                // The retained store or message storage is full: try again next time.
                Err(_) => debug!(%topic, "$SYS topic not published: broker storage full"),
            }
        }
        any
    }

    /// Folds the rates since the previous publication into the moving averages.
    fn update_loads(&mut self, now: &Snapshot, at: Clock) {
        if let Some((before, then)) = &self.previous {
            let seconds = at.saturating_duration_since(*then).as_secs_f64();
            if seconds > 0.0 {
                for (row, (_, window)) in self.loads.iter_mut().zip(WINDOWS) {
                    let keep = (-seconds / window).exp();
                    for (load, (_, read)) in row.iter_mut().zip(LOADS) {
                        let delta = read(now).saturating_sub(read(before)) as f64;
                        let per_minute = delta * 60.0 / seconds;
                        *load = *load * keep + per_minute * (1.0 - keep);
                    }
                }
            }
        }
        self.previous = Some((now.clone(), at));
    }

    /// Every topic with its payload.
    fn topics(&self, s: &Snapshot) -> Vec<(String, String)> {
        let mut topics: Vec<(String, String)> = [
            (
                "version",
                format!("fulmar version {}", env!("CARGO_PKG_VERSION")),
            ),
            ("uptime", format!("{} seconds", s.uptime.as_secs())),
            ("clients/connected", s.clients_connected.to_string()),
            ("clients/disconnected", s.clients_disconnected().to_string()),
            ("clients/total", s.sessions.to_string()),
            ("clients/maximum", s.clients_maximum.to_string()),
            // Deprecated names Mosquitto still publishes, for older dashboards.
            ("clients/active", s.clients_connected.to_string()),
            ("clients/inactive", s.clients_disconnected().to_string()),
            ("messages/received", s.packets_received.to_string()),
            ("messages/sent", s.packets_sent.to_string()),
            ("messages/stored", s.messages_stored.to_string()),
            ("store/messages/count", s.messages_stored.to_string()),
            ("publish/messages/received", s.messages_received.to_string()),
            ("publish/messages/sent", s.messages_sent.to_string()),
            ("publish/messages/dropped", s.dropped().to_string()),
            ("bytes/received", s.bytes_received.to_string()),
            ("bytes/sent", s.bytes_sent.to_string()),
            ("retained messages/count", s.retained.to_string()),
            ("subscriptions/count", s.subscriptions.to_string()),
        ]
        .into_iter()
        .map(|(name, payload)| (format!("$SYS/broker/{name}"), payload))
        .collect();
        for (row, (suffix, _)) in self.loads.iter().zip(WINDOWS) {
            for (load, (stem, _)) in row.iter().zip(LOADS) {
                topics.push((
                    format!("$SYS/broker/load/{stem}/{suffix}"),
                    format!("{load:.2}"),
                ));
            }
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulmar_core::broker::{Config, Growable};

    fn retained(broker: &Broker<Growable>) -> HashMap<String, String> {
        let mut all = HashMap::new();
        broker.for_each_retained(|topic, payload, _| {
            all.insert(
                topic.to_owned(),
                String::from_utf8_lossy(payload).into_owned(),
            );
        });
        all
    }

    #[test]
    fn publishes_retained_topics_when_due_and_only_changes() {
        let mut broker = Broker::<Growable>::new(Config::default(), 1);
        let metrics = Metrics::new();
        let start = Clock::now();
        let mut sys = SysTree::new(Duration::from_secs(10), start);
        assert_eq!(sys.next_due(), Some(start));
        assert!(sys.publish_if_due(&mut broker, &metrics, start, Instant::ZERO));
        assert_eq!(sys.next_due(), Some(start + Duration::from_secs(10)));
        let first = retained(&broker);
        assert_eq!(
            first.get("$SYS/broker/version").map(String::as_str),
            Some(concat!("fulmar version ", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(
            first
                .get("$SYS/broker/clients/connected")
                .map(String::as_str),
            Some("0")
        );
        assert_eq!(
            first
                .get("$SYS/broker/load/bytes/received/1min")
                .map(String::as_str),
            Some("0.00")
        );
        // Not due yet: nothing happens.
        let early = start + Duration::from_secs(5);
        assert!(!sys.publish_if_due(&mut broker, &metrics, early, Instant::ZERO));

        // 600 bytes in 60 s is 600 a minute; the 1 min average moves most.
        metrics.received(600);
        let later = start + Duration::from_secs(60);
        assert!(sys.publish_if_due(&mut broker, &metrics, later, Instant::ZERO));
        let second = retained(&broker);
        let load = |suffix: &str| -> f64 {
            second[&format!("$SYS/broker/load/bytes/received/{suffix}")]
                .parse()
                .unwrap()
        };
        assert!((load("1min") - 600.0 * (1.0 - (-1.0f64).exp())).abs() < 0.01);
        assert!(load("1min") > load("5min") && load("5min") > load("15min"));
        assert_eq!(second["$SYS/broker/bytes/received"], "600");
    }

    #[test]
    fn zero_interval_publishes_nothing() {
        let mut broker = Broker::<Growable>::new(Config::default(), 1);
        let start = Clock::now();
        let mut sys = SysTree::new(Duration::ZERO, start);
        assert_eq!(sys.next_due(), None);
        assert!(!sys.publish_if_due(&mut broker, &Metrics::new(), start, Instant::ZERO));
        assert_eq!(broker.retained_count(), 0);
    }
}
