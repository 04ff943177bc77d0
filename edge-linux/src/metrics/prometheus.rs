//! The Prometheus text exposition format (version 0.0.4) of a [`Snapshot`]: one `# HELP`
//! and one `# TYPE` line per metric family, then its samples. Counters end in `_total`;
//! names follow Prometheus' conventions (base units: seconds, bytes).
//!
//! Besides the broker's counters it reports `process_resident_memory_bytes`, the standard
//! process metric, read from `/proc/self/statm` at scrape time (absent where there is no
//! `/proc`).

use std::fmt::Write;

use super::{Refusal, Snapshot};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a family only goes up (`counter`) or moves both ways (`gauge`).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Builds the exposition text, one family at a time.
struct Families(String);

impl Families {
    /// A family with one unlabelled sample.
    fn one(&mut self, name: &str, kind: Kind, help: &str, value: impl std::fmt::Display) {
        self.labelled(name, kind, help, "", [("", value)]);
    }

    /// A family with one sample per value of the label `label` (unlabelled when empty).
    fn labelled<V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'static str, V)>,
    ) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (label_value, value) in samples {
            let _ = if label.is_empty() {
                writeln!(self.0, "{name} {value}")
            } else {
                writeln!(self.0, "{name}{{{label}=\"{label_value}\"}} {value}")
            };
        }
    }
}

/// The exposition text of `s` (and of this process's memory use).
pub fn render(s: &Snapshot) -> String {
    use Kind::{Counter, Gauge};
    let mut out = Families(String::with_capacity(4096));
    out.labelled(
        "fulmar_build_info",
        Gauge,
        "Always 1; the label carries the version of the running broker.",
        "version",
        [(env!("CARGO_PKG_VERSION"), 1)],
    );
    out.one(
        "fulmar_uptime_seconds",
        Gauge,
        "Seconds since the broker started.",
        s.uptime.as_secs_f64(),
    );
    out.one(
        "fulmar_connections_accepted_total",
        Counter,
        "Transport connections accepted by the listeners, refused ones included.",
        s.connections_accepted,
    );
    out.labelled(
        "fulmar_connections_refused_total",
        Counter,
        "Connections closed as soon as they were accepted: limit (max connections), rate \
         (per-address connection rate) or broker (the broker refused it).",
        "reason",
        s.connections_refused
            .map(|(why, n): (Refusal, u64)| (why.label(), n)),
    );
    out.one(
        "fulmar_connections_open",
        Gauge,
        "Transport connections served now.",
        s.connections_open,
    );
    out.one(
        "fulmar_connections_parked",
        Gauge,
        "Of the connections served, idle ones parked now: waiting as a socket, without a \
         task of their own (runtime.park_after_ms).",
        s.connections_parked,
    );
    out.one(
        "fulmar_connects_total",
        Counter,
        "CONNECT packets the broker accepted.",
        s.connects,
    );
    out.one(
        "fulmar_clients_connected",
        Gauge,
        "MQTT clients connected now.",
        s.clients_connected,
    );
    out.one(
        "fulmar_clients_maximum",
        Gauge,
        "Most MQTT clients connected at once since the broker started.",
        s.clients_maximum,
    );
    out.one(
        "fulmar_sessions",
        Gauge,
        "Sessions held, of connected and of disconnected clients.",
        s.sessions,
    );
    out.one(
        "fulmar_subscriptions",
        Gauge,
        "Subscriptions, all sessions together.",
        s.subscriptions,
    );
    out.one(
        "fulmar_received_bytes_total",
        Counter,
        "Bytes read from clients.",
        s.bytes_received,
    );
    out.one(
        "fulmar_sent_bytes_total",
        Counter,
        "Bytes handed to client sockets.",
        s.bytes_sent,
    );
    out.one(
        "fulmar_packets_received_total",
        Counter,
        "MQTT control packets received.",
        s.packets_received,
    );
    out.one(
        "fulmar_packets_sent_total",
        Counter,
        "MQTT control packets sent.",
        s.packets_sent,
    );
    out.one(
        "fulmar_messages_received_total",
        Counter,
        "PUBLISH packets received from clients.",
        s.messages_received,
    );
    out.one(
        "fulmar_messages_sent_total",
        Counter,
        "PUBLISH packets sent to clients.",
        s.messages_sent,
    );
    out.one(
        "fulmar_publisher_stalls_total",
        Counter,
        "Times a client's input was paused (not read, not acknowledged) because a \
         subscriber's queue was full, or a shard paused the copies another sent it for \
         one (their publishers wait for acknowledgements): backpressure instead of a drop.",
        s.stalls,
    );
    out.labelled(
        "fulmar_messages_dropped_total",
        Counter,
        "Messages not delivered to a session: queue_full (its queue was full), expired \
         (Message Expiry Interval passed) or oversized (above the client's Maximum Packet \
         Size).",
        "reason",
        [
            ("queue_full", s.dropped_queue_full),
            ("expired", s.dropped_expired),
            ("oversized", s.dropped_oversized),
        ],
    );
    out.one(
        "fulmar_retained_messages",
        Gauge,
        "Retained messages held.",
        s.retained,
    );
    out.one(
        "fulmar_stored_messages",
        Gauge,
        "Distinct messages held, retained or queued for sessions.",
        s.messages_stored,
    );
    out.one(
        "fulmar_queued_deliveries",
        Gauge,
        "Deliveries waiting for, or in flight to, sessions (one per message and session).",
        s.deliveries_queued,
    );
    out.one(
        "fulmar_protocol_errors_total",
        Counter,
        "Connections closed for a protocol violation or a malformed packet.",
        s.protocol_errors,
    );
    if !s.bridges.is_empty() {
        let bridges = || s.bridges.iter();
        out.labelled(
            "fulmar_bridge_up",
            Gauge,
            "1 while the bridge is connected upstream (its CONNECT accepted), else 0.",
            "bridge",
            bridges().map(|(name, b)| (*name, u8::from(b.up))),
        );
        out.labelled(
            "fulmar_bridge_backlog_messages",
            Gauge,
            "Messages the bridge holds for upstream: waiting, or in flight to it.",
            "bridge",
            bridges().map(|(name, b)| (*name, b.backlog)),
        );
        out.labelled(
            "fulmar_bridge_dropped_total",
            Counter,
            "Messages the bridge dropped: its backlog full while upstream was away, or larger \
             than upstream takes.",
            "bridge",
            bridges().map(|(name, b)| (*name, b.dropped)),
        );
    }
    if let Some(bytes) = resident_memory() {
        out.one(
            "process_resident_memory_bytes",
            Gauge,
            "Resident memory size in bytes.",
            bytes,
        );
    }
    out.0
}

/// This process's resident set size: the second field of `/proc/self/statm`, in pages.
fn resident_memory() -> Option<u64> {
    // Linux pages are 4 KiB on every target Fulmar ships for (x86_64, aarch64, armv7);
    // reading the real size would take libc.
    const PAGE: u64 = 4096;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn every_family_has_help_and_type_and_samples_parse() {
        let metrics = Metrics::new();
        metrics.refused(Refusal::Limit);
        metrics.received(42);
        let text = render(&metrics.snapshot());
        let mut family = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().map(str::to_owned);
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split(' ');
                assert_eq!(words.next(), family.as_deref(), "TYPE after its HELP");
                assert!(matches!(words.next(), Some("counter" | "gauge")));
                continue;
            }
            let name = family.as_deref().expect("a sample after HELP and TYPE");
            assert!(line.starts_with(name), "{line} belongs to {name}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(text.contains("fulmar_connections_refused_total{reason=\"limit\"} 1\n"));
        assert!(text.contains("fulmar_received_bytes_total 42\n"));
        assert!(text.contains("# TYPE fulmar_clients_connected gauge\n"));
    }
}
