//! Router speed: matching a topic against 1 000, 100 000 and 1 000 000 subscriptions,
//! subscribe/unsubscribe churn, and the trie against a naive linear scan.
//!
//! The subscriptions model a fleet of sites, each with ten devices reporting four metrics
//! (`site/{s}/dev/{d}/{metric}`), one site per 50 subscriptions:
//! - 70 % exact topics, `site/{s}/dev/{d}/{metric}`;
//! - 15 % `+` filters over a site's devices, `site/{s}/dev/+/{metric}`;
//! - 5 % `#` filters on one device, `site/{s}/dev/{d}/#`, and 5 % on a whole site,
//!   `site/{s}/#`;
//! - 5 % `$share/ingest/site/{s}/#`: one ingest group per site, a few workers in each.
//!
//! Sessions hold eight subscriptions each. Every published topic is a real device topic, so
//! a route call matches a handful of subscriptions (the bench prints the average) and does
//! the work a broker does per PUBLISH. The router is built once per size, outside the timed
//! loop, and each timed iteration routes a batch of [`BATCH`] topics drawn at random, so
//! criterion's time per element is the time of one route call.
//!
//! The `linear` rows at 1 000 subscriptions run `fulmar_core::topic::matches` over every
//! filter for each topic, which is what a broker without an index does; the ratio to the
//! `route` row is the trie's advantage at a size where a scan is still plausible.
//!
//! Run with `cargo bench -p fulmar-core --features alloc --bench router` (the growable
//! back-end needs `alloc`); add a filter such as `churn` to run some groups only.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fulmar_core::codec::{QoS, SubscriptionOptions};
use fulmar_core::router::{Delivery, Growable, Router, SessionId, ShareStrategy};
use fulmar_core::topic::{SubscriptionFilter, TopicLimits, TopicName, matches};

const LIMITS: TopicLimits = TopicLimits::DEFAULT;
const METRICS: [&str; 4] = ["temp", "hum", "co2", "status"];
const DEVICES_PER_SITE: u64 = 10;
const SUBS_PER_SITE: u64 = 50;
const SUBS_PER_SESSION: u64 = 8;
/// Topics routed per timed iteration.
const BATCH: usize = 1024;
const SEED: u64 = 0x5EED_F00D;

/// splitmix64: a deterministic stream, so every run builds the same subscriptions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn sites(subscriptions: u64) -> u64 {
    (subscriptions / SUBS_PER_SITE).max(1)
}

/// The `n` filters of the mix, as SUBSCRIBE would carry them.
fn filters(n: u64, rng: &mut Rng) -> Vec<String> {
    let sites = sites(n);
    (0..n)
        .map(|i| {
            let s = rng.below(sites);
            let d = rng.below(DEVICES_PER_SITE);
            let m = METRICS[rng.below(METRICS.len() as u64) as usize];
            match i % 20 {
                0..=13 => format!("site/{s}/dev/{d}/{m}"),
                14..=16 => format!("site/{s}/dev/+/{m}"),
                17 => format!("site/{s}/dev/{d}/#"),
                18 => {
                    if i % 40 == 18 {
                        format!("site/{s}/#")
                    } else {
                        format!("$share/ingest/site/{s}/#")
                    }
                }
                _ => {
                    if i % 40 == 19 {
                        format!("site/{s}/#")
                    } else {
                        format!("$share/ingest/site/{s}/#")
                    }
                }
            }
        })
        .collect()
}

/// `count` device topics drawn at random from the fleet of a router with `n` subscriptions.
fn topics(n: u64, count: usize, rng: &mut Rng) -> Vec<String> {
    let sites = sites(n);
    (0..count)
        .map(|_| {
            let s = rng.below(sites);
            let d = rng.below(DEVICES_PER_SITE);
            let m = METRICS[rng.below(METRICS.len() as u64) as usize];
            format!("site/{s}/dev/{d}/{m}")
        })
        .collect()
}

fn build(filters: &[String]) -> Router<Growable> {
    let mut router = Router::<Growable>::new(SEED, ShareStrategy::RoundRobin);
    for (i, filter) in filters.iter().enumerate() {
        let parsed = SubscriptionFilter::parse(filter, &LIMITS).expect("valid filter");
        router
            .subscribe(
                SessionId((i as u64 / SUBS_PER_SESSION) as u32),
                &parsed,
                SubscriptionOptions::qos(QoS::AtLeastOnce),
                None,
            )
            .expect("growable router has room");
    }
    router
}

fn names(topics: &[String]) -> Vec<TopicName<'_>> {
    topics
        .iter()
        .map(|t| TopicName::new(t, &LIMITS).expect("valid topic"))
        .collect()
}

fn count_matches(router: &Router<Growable>, names: &[TopicName<'_>]) -> u64 {
    let mut count = 0;
    for name in names {
        router.route(name, None, |_| count += 1);
    }
    count
}

/// A filter list split once, the way a naive broker keeps it: the matched filter and
/// whether it is shared (a scan still has to know which group a match belongs to).
fn linear_table(filters: &[String]) -> Vec<(&str, bool)> {
    filters
        .iter()
        .map(
            |f| match SubscriptionFilter::parse(f, &LIMITS).expect("valid") {
                SubscriptionFilter::Plain(filter) => (filter.as_str(), false),
                SubscriptionFilter::Shared { filter, .. } => (filter.as_str(), true),
            },
        )
        .collect()
}

fn route_benches(c: &mut Criterion) {
    for (n, label) in [(1_000u64, "1k"), (100_000, "100k"), (1_000_000, "1M")] {
        let mut rng = Rng(SEED ^ n);
        let filters = filters(n, &mut rng);
        let started = Instant::now();
        let router = build(&filters);
        let build_time = started.elapsed();
        let topics = topics(n, BATCH, &mut rng);
        let names = names(&topics);
        let matched = count_matches(&router, &names);
        println!(
            "router/{label}: {} subscriptions, {} trie nodes, built in {:.0} ms \
             ({:.0} ns per subscribe); {:.2} matches per route call",
            router.len(),
            router.node_count(),
            build_time.as_secs_f64() * 1e3,
            build_time.as_secs_f64() * 1e9 / n as f64,
            matched as f64 / BATCH as f64,
        );

        let mut group = c.benchmark_group(format!("router/{label}"));
        group
            .sample_size(if n >= 1_000_000 { 20 } else { 50 })
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(BenchmarkId::from_parameter("route"), |b| {
            b.iter(|| {
                let mut count = 0u32;
                for name in &names {
                    router.route(black_box(name), None, |m| {
                        count += 1;
                        black_box(m);
                    });
                }
                count
            })
        });
        let mut out: Vec<Delivery> = Vec::new();
        group.bench_function(BenchmarkId::from_parameter("deliveries"), |b| {
            b.iter(|| {
                let mut count = 0usize;
                for name in &names {
                    router
                        .deliveries(black_box(name), None, &mut out)
                        .expect("growable output");
                    count += out.len();
                }
                count
            })
        });
        if n == 1_000 {
            let table = linear_table(&filters);
            let mut scanned = 0;
            for name in &names {
                scanned += table
                    .iter()
                    .filter(|(f, _)| matches(f, name.as_str()))
                    .count() as u64;
            }
            // The same matches, except that the scan reports every member of a share
            // group where the router picks one.
            println!("router/{label}: linear scan finds {scanned} matches, route {matched}");
            group.bench_function(BenchmarkId::from_parameter("linear"), |b| {
                b.iter(|| {
                    let mut count = 0u32;
                    for name in &names {
                        let topic = black_box(name.as_str());
                        for (filter, shared) in &table {
                            if matches(filter, topic) {
                                count += 1;
                                black_box(shared);
                            }
                        }
                    }
                    count
                })
            });
        }
        group.finish();
        if n == 100_000 {
            churn(c, router, n, &mut rng);
        }
    }
}

/// One subscribe and one unsubscribe per element, on a router already holding `n`.
fn churn(c: &mut Criterion, mut router: Router<Growable>, n: u64, rng: &mut Rng) {
    const SET: usize = 4096;
    let sites = sites(n);
    // An existing device topic: the node is there, only the subscription comes and goes.
    let existing: Vec<String> = topics(n, SET, rng);
    // A device that does not exist yet: two trie nodes are created, and pruned again.
    let fresh: Vec<String> = (0..SET)
        .map(|i| format!("site/{}/dev/new{i}/temp", rng.below(sites)))
        .collect();
    // A new member of an existing share group.
    let shared: Vec<String> = (0..SET)
        .map(|_| format!("$share/ingest/site/{}/#", rng.below(sites)))
        .collect();
    let session = SessionId(u32::MAX - 1);
    let options = SubscriptionOptions::qos(QoS::AtLeastOnce);
    let mut group = c.benchmark_group("router/churn_100k");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(SET as u64));
    for (name, set) in [
        ("existing_topic", &existing),
        ("new_topic", &fresh),
        ("share_member", &shared),
    ] {
        let parsed: Vec<SubscriptionFilter<'_>> = set
            .iter()
            .map(|f| SubscriptionFilter::parse(f, &LIMITS).expect("valid"))
            .collect();
        let before = router.len();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                for filter in &parsed {
                    let _ = router.subscribe(session, black_box(filter), options, None);
                    assert!(router.unsubscribe(session, black_box(filter)));
                }
            })
        });
        assert_eq!(router.len(), before, "churn leaves the router as it was");
    }
    group.finish();
}

criterion_group!(benches, route_benches);
criterion_main!(benches);
