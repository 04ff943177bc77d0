//! The router's test suite, run over both storage back-ends, plus a property test against
//! a linear scan with [`crate::topic::matches`].

use super::*;
use crate::codec::RetainHandling;
use crate::topic::{TopicLimits, TopicName};

type Small = Fixed<64, 32, 4, 128, 32, 64, 1024>;

fn filter(s: &str) -> SubscriptionFilter<'_> {
    SubscriptionFilter::parse(s, &TopicLimits::DEFAULT).unwrap()
}

fn topic(s: &str) -> TopicName<'_> {
    TopicName::new(s, &TopicLimits::DEFAULT).unwrap()
}

fn opts(qos: u8) -> SubscriptionOptions {
    SubscriptionOptions::qos(QoS::from_bits(qos).unwrap())
}

fn sid(n: u32) -> SubscriptionId {
    SubscriptionId::new(n).unwrap()
}

/// Sessions matched by `t`, sorted, one entry per match.
fn matched<S: RouterStorage>(router: &Router<S>, t: &str) -> heapless::Vec<u32, 64> {
    let mut out = heapless::Vec::new();
    router.route(&topic(t), None, |m| out.push(m.session.0).unwrap());
    out.sort_unstable();
    out
}

fn deliveries<S: RouterStorage>(
    router: &Router<S>,
    t: &str,
    publisher: Option<u32>,
) -> heapless::Vec<Delivery, 64> {
    let mut out = heapless::Vec::new();
    router
        .deliveries(&topic(t), publisher.map(SessionId), &mut out)
        .unwrap();
    out
}

fn wildcard_matching<S: RouterStorage>() {
    let mut r = Router::<S>::new(1, ShareStrategy::RoundRobin);
    for (session, f) in [
        (1, "sport/tennis/player1"),
        (2, "sport/tennis/+"),
        (3, "sport/#"),
        (4, "#"),
        (5, "+/tennis/#"),
        (6, "$SYS/#"),
        (7, "+/+"),
        (8, "/+"),
    ] {
        assert!(
            !r.subscribe(SessionId(session), &filter(f), opts(0), None)
                .unwrap()
        );
    }
    // §4.7.1.2, §4.7.1.3 examples.
    assert_eq!(matched(&r, "sport/tennis/player1"), [1, 2, 3, 4, 5]);
    assert_eq!(matched(&r, "sport"), [3, 4]);
    assert_eq!(matched(&r, "sport/tennis"), [3, 4, 5, 7]);
    assert_eq!(matched(&r, "/finance"), [4, 7, 8]);
    // [MQTT-4.7.2-1]: `#` and `+/…` do not match `$SYS`; `$SYS/#` does.
    assert_eq!(matched(&r, "$SYS/broker/load"), [6]);
    assert_eq!(matched(&r, "$SYS/x"), [6]);
}

fn overlapping_subscriptions_merge<S: RouterStorage>() {
    let mut r = Router::<S>::new(2, ShareStrategy::RoundRobin);
    r.subscribe(SessionId(1), &filter("a/+"), opts(0), Some(sid(10)))
        .unwrap();
    r.subscribe(SessionId(1), &filter("a/#"), opts(2), Some(sid(11)))
        .unwrap();
    r.subscribe(SessionId(1), &filter("a/b"), opts(1), None)
        .unwrap();
    r.subscribe(SessionId(2), &filter("a/b"), opts(1), None)
        .unwrap();
    let out = deliveries(&r, "a/b", None);
    assert_eq!(out.len(), 2);
    // [MQTT-3.3.4-2]: the highest QoS of the overlapping subscriptions.
    assert_eq!(out[0].session, SessionId(1));
    assert_eq!(out[0].qos, QoS::ExactlyOnce);
    // [MQTT-3.3.4-4]: every matching subscription's identifier.
    let mut ids: heapless::Vec<u32, 4> = out[0].identifiers.iter().map(|i| i.get()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [10, 11]);
    assert_eq!(
        (out[1].session, out[1].qos),
        (SessionId(2), QoS::AtLeastOnce)
    );
}

fn no_local_skips_the_publisher<S: RouterStorage>() {
    let mut r = Router::<S>::new(3, ShareStrategy::RoundRobin);
    let mut no_local = opts(1);
    no_local.no_local = true;
    r.subscribe(SessionId(1), &filter("chat"), no_local, None)
        .unwrap();
    r.subscribe(SessionId(2), &filter("chat"), no_local, None)
        .unwrap();
    // [MQTT-3.8.3-3]: not sent back to the client that published it.
    let out = deliveries(&r, "chat", Some(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].session, SessionId(2));
}

fn replace_and_unsubscribe_prune<S: RouterStorage>() {
    let mut r = Router::<S>::new(4, ShareStrategy::RoundRobin);
    let empty_nodes = r.node_count();
    r.subscribe(SessionId(1), &filter("a/b/c"), opts(0), None)
        .unwrap();
    r.subscribe(SessionId(1), &filter("a/+/#"), opts(0), None)
        .unwrap();
    // [MQTT-3.8.4-3]: the same filter again replaces the subscription.
    let mut new = opts(2);
    new.retain_handling = RetainHandling::DoNotSend;
    assert!(
        r.subscribe(SessionId(1), &filter("a/b/c"), new, None)
            .unwrap()
    );
    assert_eq!(r.len(), 2);
    assert_eq!(deliveries(&r, "a/b/c", None)[0].qos, QoS::ExactlyOnce);
    assert!(r.unsubscribe(SessionId(1), &filter("a/b/c")));
    assert!(!r.unsubscribe(SessionId(1), &filter("a/b/c")));
    assert!(!r.unsubscribe(SessionId(2), &filter("a/+/#")));
    assert!(r.unsubscribe(SessionId(1), &filter("a/+/#")));
    assert!(r.is_empty());
    assert_eq!(r.node_count(), empty_nodes, "empty branches are pruned");
    assert_eq!(matched(&r, "a/b/c"), []);
}

fn shared_groups_pick_one_member<S: RouterStorage>() {
    let mut r = Router::<S>::new(5, ShareStrategy::RoundRobin);
    for session in 1..=3 {
        r.subscribe(
            SessionId(session),
            &filter("$share/g/jobs/+"),
            opts(1),
            None,
        )
        .unwrap();
    }
    r.subscribe(SessionId(9), &filter("$share/other/jobs/#"), opts(0), None)
        .unwrap();
    r.subscribe(SessionId(1), &filter("jobs/+"), opts(0), None)
        .unwrap();
    let mut per_member = [0u32; 4];
    for _ in 0..6 {
        let out = deliveries(&r, "jobs/x", None);
        // One plain copy for session 1, one per group (§4.8.2).
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out.iter().filter(|d| d.shared).count(), 2);
        for d in out.iter().filter(|d| d.shared && d.session != SessionId(9)) {
            per_member[d.session.0 as usize] += 1;
        }
    }
    assert_eq!(per_member[1..], [2, 2, 2], "round robin shares evenly");
    // Members leave; the group goes with its last member.
    for session in 1..=3 {
        assert!(r.unsubscribe(SessionId(session), &filter("$share/g/jobs/+")));
    }
    assert_eq!(deliveries(&r, "jobs/x", None).len(), 2);
}

fn share_strategies_are_stable<S: RouterStorage>() {
    for strategy in [
        ShareStrategy::HashTopic,
        ShareStrategy::HashPublisher,
        ShareStrategy::Random,
    ] {
        let mut r = Router::<S>::new(6, strategy);
        for session in 1..=4 {
            r.subscribe(SessionId(session), &filter("$share/g/t/#"), opts(0), None)
                .unwrap();
        }
        let first = deliveries(&r, "t/a", Some(7))[0].session;
        for _ in 0..8 {
            let out = deliveries(&r, "t/a", Some(7));
            assert_eq!(out.len(), 1);
            if strategy != ShareStrategy::Random {
                assert_eq!(out[0].session, first, "{strategy:?} is sticky");
            }
        }
    }
}

fn per_session_listing_and_removal<S: RouterStorage>() {
    let mut r = Router::<S>::new(8, ShareStrategy::RoundRobin);
    let filters = ["a/b", "a/+/c", "$share/g/x/#", "#", "/"];
    for f in filters {
        r.subscribe(SessionId(1), &filter(f), opts(1), Some(sid(3)))
            .unwrap();
    }
    r.subscribe(SessionId(2), &filter("a/b"), opts(0), None)
        .unwrap();
    assert!(r.unsubscribe(SessionId(1), &filter("a/+/c")));
    let mut listed: std::vec::Vec<std::string::String> = std::vec::Vec::new();
    let mut scratch = [0u8; 64];
    r.for_each_subscription(SessionId(1), &mut scratch, |f, o, id| {
        assert_eq!((o.qos, id), (QoS::AtLeastOnce, Some(sid(3))));
        listed.push(f.into());
    });
    listed.sort();
    assert_eq!(listed, ["#", "$share/g/x/#", "/", "a/b"]);
    assert_eq!(r.unsubscribe_all(SessionId(1)), 4);
    assert_eq!(r.unsubscribe_all(SessionId(1)), 0);
    assert_eq!(matched(&r, "a/b"), [2]);
    assert_eq!(r.len(), 1);
}

macro_rules! suite {
    ($module:ident, $storage:ty) => {
        mod $module {
            use super::*;
            #[test]
            fn wildcard_matching() {
                super::wildcard_matching::<$storage>();
            }
            #[test]
            fn overlapping_subscriptions_merge() {
                super::overlapping_subscriptions_merge::<$storage>();
            }
            #[test]
            fn no_local_skips_the_publisher() {
                super::no_local_skips_the_publisher::<$storage>();
            }
            #[test]
            fn replace_and_unsubscribe_prune() {
                super::replace_and_unsubscribe_prune::<$storage>();
            }
            #[test]
            fn shared_groups_pick_one_member() {
                super::shared_groups_pick_one_member::<$storage>();
            }
            #[test]
            fn per_session_listing_and_removal() {
                super::per_session_listing_and_removal::<$storage>();
            }
            #[test]
            fn share_strategies_are_stable() {
                super::share_strategies_are_stable::<$storage>();
            }
        }
    };
}

suite!(fixed, Small);
#[cfg(feature = "alloc")]
suite!(growable, Growable);

#[test]
fn fixed_capacity_full_is_quota_error_and_leaks_nothing() {
    type Tiny = Fixed<4, 2, 1, 8, 8, 8, 8>;
    let mut r = Router::<Tiny>::new(7, ShareStrategy::RoundRobin);
    r.subscribe(SessionId(1), &filter("a/b"), opts(0), None)
        .unwrap();
    r.subscribe(SessionId(2), &filter("a/b"), opts(0), None)
        .unwrap();
    let nodes = r.node_count();
    // A third subscription does not fit; neither does a deeper branch.
    assert_eq!(
        r.subscribe(SessionId(3), &filter("a/b"), opts(0), None),
        Err(RouterError::Capacity)
    );
    assert_eq!(
        r.subscribe(SessionId(1), &filter("x/y/z/w"), opts(0), None),
        Err(RouterError::Capacity)
    );
    // A level longer than the room left for level text.
    assert_eq!(
        r.subscribe(SessionId(1), &filter("a/very-long-level"), opts(0), None),
        Err(RouterError::Capacity)
    );
    assert_eq!(
        r.node_count(),
        nodes,
        "failed subscribes leave no nodes behind"
    );
    assert_eq!(matched(&r, "a/b"), [1, 2]);
}

#[test]
fn fixed_level_text_freed_by_unsubscribe_is_reused_and_later_levels_still_match() {
    // 24 bytes of level text: `site`, `kitchen`, `temp` and `garage` fill 21 of them.
    type Pool = Fixed<8, 4, 1, 16, 16, 8, 24>;
    let mut r = Router::<Pool>::new(3, ShareStrategy::RoundRobin);
    r.subscribe(SessionId(1), &filter("site/kitchen/temp"), opts(1), None)
        .unwrap();
    r.subscribe(SessionId(2), &filter("site/garage/+"), opts(1), None)
        .unwrap();
    assert_eq!(
        r.subscribe(SessionId(3), &filter("site/cellar"), opts(1), None),
        Err(RouterError::Capacity)
    );
    // Removing the first branch moves `garage` down to where `kitchen` was.
    assert!(r.unsubscribe(SessionId(1), &filter("site/kitchen/temp")));
    assert_eq!(matched(&r, "site/garage/door"), [2]);
    assert!(matched(&r, "site/kitchen/temp").is_empty());
    r.subscribe(SessionId(3), &filter("site/cellar"), opts(1), None)
        .unwrap();
    assert_eq!(matched(&r, "site/cellar"), [3]);
    assert_eq!(matched(&r, "site/garage/door"), [2]);
}

mod model {
    //! The router against a linear scan over the same subscriptions.
    use super::*;
    use proptest::prelude::*;

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(&["a", "b", "c", "", "$x"][..])
    }

    fn filter_string() -> impl Strategy<Value = std::string::String> {
        (
            prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+")], 1..4),
            any::<bool>(),
        )
            .prop_map(|(levels, hash)| {
                let mut s = levels.join("/");
                if hash {
                    s.push_str("/#");
                }
                if s.is_empty() { "e".into() } else { s }
            })
    }

    fn topic_string() -> impl Strategy<Value = std::string::String> {
        prop::collection::vec(level(), 1..5).prop_map(|levels| {
            let s = levels.join("/");
            if s.is_empty() { "e".into() } else { s }
        })
    }

    proptest! {
        #[test]
        fn router_agrees_with_linear_scan(
            ops in prop::collection::vec((0u32..6, filter_string(), any::<bool>()), 1..60),
            topics in prop::collection::vec(topic_string(), 1..20),
        ) {
            let mut router = Router::<Fixed<512, 128, 4, 1024, 8, 256, 4096>>::new(9, ShareStrategy::RoundRobin);
            let mut model: std::vec::Vec<(u32, std::string::String)> = std::vec::Vec::new();
            for (session, f, add) in &ops {
                let parsed = filter(f);
                if *add {
                    router.subscribe(SessionId(*session), &parsed, opts(0), None).unwrap();
                    if !model.iter().any(|(s, m)| s == session && m == f) {
                        model.push((*session, f.clone()));
                    }
                } else {
                    let existed = model.iter().any(|(s, m)| s == session && m == f);
                    prop_assert_eq!(router.unsubscribe(SessionId(*session), &parsed), existed);
                    model.retain(|(s, m)| !(s == session && m == f));
                }
            }
            prop_assert_eq!(router.len(), model.len());
            for t in &topics {
                let mut expected: std::vec::Vec<u32> = model
                    .iter()
                    .filter(|(_, f)| crate::topic::matches(f, t))
                    .map(|(s, _)| *s)
                    .collect();
                expected.sort_unstable();
                let got = matched(&router, t);
                prop_assert_eq!(&got[..], &expected[..], "topic {:?}", t);
                // Merged per session, whether one node matched or several.
                expected.dedup();
                let mut merged: std::vec::Vec<u32> =
                    deliveries(&router, t, None).iter().map(|d| d.session.0).collect();
                merged.sort_unstable();
                prop_assert_eq!(&merged[..], &expected[..], "deliveries of {:?}", t);
            }
        }
    }
}
