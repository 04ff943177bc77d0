//! Fuzzes encode → decode across all three protocol versions, from packets built by the
//! fuzzer and from packets decoded off the wire.
//!
//! The invariant: for every packet `P` valid in its version `V`, and every version `W`
//! the packet type exists in, encoding `P` for `W` and decoding the bytes as `W` gives
//! exactly `downgrade(P, W)`: `P` itself when `W` is `V`, otherwise `P` as the codec
//! documents a client of `W` receiving it (properties dropped before 5.0, reason codes
//! mapped, subscription options cut to the QoS; see `fulmar_core_fuzz::model`). Those
//! bytes are canonical: decoding and re-encoding them gives them back. AUTH for 3.x is
//! `UnsupportedInVersion`, and a 5.0 PUBLISH whose topic is a Topic Alias, sent to 3.x,
//! is refused by a 3.x decoder as an empty topic name. Every encode also checks the
//! encoder's own contract (`fulmar_core_fuzz::check::encode`).
//!
//! This is stronger than either half of it:
//! - Packets come from an owned model with `#[derive(Arbitrary)]`, normalized to the
//!   nearest valid packet by rules restated from the specifications, and are encoded from
//!   caller-owned items, the way a broker builds them; so every valid packet the fuzzer
//!   can describe must be accepted by the decoder, not only those it already parses.
//! - Packets also come from decoding seed-like input; each is turned into the model,
//!   which must already be normalized: the decoder may accept nothing the restated rules
//!   refuse. Between the two paths, the decoder and the spec's rules are checked against
//!   each other in both directions.
//!
//! Input: a selector byte; `selector % 3` picks the version (3.1, 3.1.1, 5.0). Below 0x80
//! the rest is a byte stream to decode in that version (every packet in it is checked,
//! switching version after a CONNECT, so the `decode` seeds work here too); from 0x80 it
//! feeds `arbitrary` to build one packet.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use fulmar_core::codec::{
    DecodeError, EncodeError, MAX_PACKET_SIZE, Packet, ProtocolVersion, decode,
};
use fulmar_core_fuzz::VERSIONS;
use fulmar_core_fuzz::check;
use fulmar_core_fuzz::model::PacketModel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = VERSIONS[usize::from(selector % 3)];
    if selector < 0x80 {
        from_wire(rest, version);
    } else {
        from_model(rest, version);
    }
});

/// Checks every packet of a byte stream.
fn from_wire(mut rest: &[u8], mut version: ProtocolVersion) {
    while let Ok((packet, used)) = decode(rest, version, MAX_PACKET_SIZE) {
        // A CONNECT is read in the version it announces, and is valid in that one.
        if let Packet::Connect(connect) = &packet {
            version = connect.get().protocol;
        }
        let model = PacketModel::from_packet(&packet);
        let mut normalized = model.clone();
        normalized.normalize(version);
        assert_eq!(
            normalized, model,
            "the decoder accepted a packet that the {version} rules refuse: {packet:?}"
        );
        let lists = model.lists();
        assert_eq!(
            model.build(&lists).packet(),
            packet,
            "the model lost part of the packet"
        );
        check_all_versions(&model, version);
        rest = &rest[used..];
    }
}

/// Builds a valid packet from the fuzzer's bytes and checks it.
fn from_model(bytes: &[u8], requested: ProtocolVersion) {
    let Ok(mut model) = PacketModel::arbitrary_take_rest(Unstructured::new(bytes)) else {
        return;
    };
    let version = if model.exists_in(requested) {
        requested
    } else {
        ProtocolVersion::V5
    };
    model.normalize(version);
    let mut again = model.clone();
    again.normalize(version);
    assert_eq!(again, model, "normalize is not idempotent");
    check_all_versions(&model, version);
}

/// Encodes the packet of a normalized `model` for every version and checks what a
/// decoder of that version reads.
fn check_all_versions(model: &PacketModel, version: ProtocolVersion) {
    let lists = model.lists();
    let built = model.build(&lists);
    let packet = built.packet();
    for target in VERSIONS {
        let encoded = check::encode(&packet, target);
        if !model.exists_in(target) {
            assert_eq!(encoded, Err(EncodeError::UnsupportedInVersion));
            continue;
        }
        let bytes = encoded.unwrap_or_else(|e| panic!("{e} encoding {packet:?} for {target}"));
        let result = decode(&bytes, target, MAX_PACKET_SIZE);
        if model.needs_topic_alias() && !target.is_v5() {
            assert_eq!(result, Err(DecodeError::EmptyTopicName));
            continue;
        }
        let (decoded, used) =
            result.unwrap_or_else(|e| panic!("{e} decoding {packet:?} encoded for {target}"));
        assert_eq!(used, bytes.len());

        let expected_model = model.downgrade(target);
        if target == version {
            assert_eq!(
                expected_model, *model,
                "downgrade to the packet's own version"
            );
        }
        let mut renormalized = expected_model.clone();
        renormalized.normalize(match &packet {
            Packet::Connect(connect) => connect.get().protocol,
            _ => target,
        });
        assert_eq!(
            renormalized, expected_model,
            "downgrade gave an invalid packet"
        );
        let expected_lists = expected_model.lists();
        let expected = expected_model.build(&expected_lists);
        assert_eq!(
            decoded,
            expected.packet(),
            "{packet:?} encoded for {target}"
        );

        assert_eq!(
            check::encode(&decoded, target),
            Ok(bytes.clone()),
            "the encoding of {packet:?} for {target} is not canonical"
        );
        assert_eq!(
            decode(&bytes, target, bytes.len() - 1),
            Err(DecodeError::PacketTooLarge {
                size: bytes.len(),
                max: bytes.len() - 1
            })
        );
    }
}
