//! Decoding hostile input: arbitrary bytes, well-framed random bodies, and valid encodings
//! with bytes flipped, replaced, inserted, removed or cut off, in every protocol version.
//!
//! Whatever the input, `decode`
//! - never panics;
//! - on success consumed at most the input, and decoding only the consumed bytes gives the
//!   same packet (it never looked past its frame); the packet re-encodes to at most as many
//!   bytes, and those decode to an equal packet (decode → encode → decode is stable);
//! - fails the same way on the frame alone as on the frame with more bytes after it;
//! - on `Incomplete { needed }` asks for at least one byte, and no fewer bytes can succeed;
//!   once the fixed header is readable, `needed` is exactly the rest of the frame;
//! - reads a CONNECT the same whatever version it is given (the CONNECT announces its own).
//!
//! Fed a valid stream `needed` bytes at a time, decoding reaches each packet exactly at its
//! end, never asking for a byte beyond it.

mod common;

use common::{PacketModel, VERSIONS, arb_packet, config, frame, push_var_int};
use fulmar_core::codec::{
    DecodeError, FixedHeader, MAX_PACKET_SIZE, Packet, ProtocolVersion, decode,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Checks every invariant `decode` promises for one input.
fn check_decode(input: &[u8], version: ProtocolVersion, max: usize) -> Result<(), TestCaseError> {
    let result = decode(input, version, max);
    match result {
        Ok((packet, used)) => {
            prop_assert!(
                used <= input.len() && used <= max,
                "consumed {used} of {}",
                input.len()
            );
            prop_assert!(used >= 2, "a packet is at least two bytes");
            // Only the frame was read.
            prop_assert_eq!(decode(&input[..used], version, max), Ok((packet, used)));
            // [MQTT-1.5.5-1] (5.0): the remaining length took the fewest bytes.
            let v5 = match packet {
                Packet::Connect(connect) => connect.get().protocol.is_v5(),
                _ => version.is_v5(),
            };
            if v5 {
                let header = FixedHeader::parse(input, version, max).expect("decoded");
                let mut minimal = Vec::new();
                push_var_int(&mut minimal, header.remaining_length);
                prop_assert_eq!(header.header_len, 1 + minimal.len());
            }
            check_reencode(&packet, version, used)?;
        }
        Err(DecodeError::Incomplete { needed }) => {
            prop_assert!(needed >= 1, "Incomplete asks for nothing");
            if let Ok(header) = FixedHeader::parse(input, version, max) {
                prop_assert_eq!(needed, header.packet_len() - input.len());
            }
            // `needed` is a lower bound: fewer bytes, whatever they are, cannot succeed.
            for filler in [0x00, 0x7F, 0xFF] {
                for extra in 0..needed.min(4) {
                    let mut longer = input.to_vec();
                    longer.resize(input.len() + extra, filler);
                    prop_assert!(
                        decode(&longer, version, max).is_err(),
                        "decoded with {extra} of the {needed} bytes asked for"
                    );
                }
            }
        }
        Err(error) => {
            // An error depends on the frame only, never on what follows it.
            if let Ok(header) = FixedHeader::parse(input, version, max) {
                let frame = &input[..header.packet_len()];
                prop_assert_eq!(decode(frame, version, max), Err(error));
                let mut longer = frame.to_vec();
                longer.extend_from_slice(&[0xFF, 0x00, 0x30]);
                prop_assert_eq!(decode(&longer, version, max), Err(error));
            }
        }
    }
    // A CONNECT announces its own version: the connection's does not change how it is read.
    if input.first().is_some_and(|&b| b >> 4 == 1) {
        for other in VERSIONS {
            prop_assert_eq!(
                decode(input, other, max),
                result,
                "CONNECT read as {} differs from {}",
                other,
                version
            );
        }
    }
    Ok(())
}

/// A decoded packet encodes again, no longer than it came, and decodes to an equal packet.
fn check_reencode(
    packet: &Packet<'_>,
    version: ProtocolVersion,
    used: usize,
) -> Result<(), TestCaseError> {
    let len = packet.encoded_len(version);
    prop_assert!(len <= used, "re-encoding grew from {used} to {len} bytes");
    let mut buf = vec![0; len];
    prop_assert_eq!(packet.encode(version, &mut buf), Ok(len));
    prop_assert_eq!(decode(&buf, version, MAX_PACKET_SIZE), Ok((*packet, len)));
    Ok(())
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        3 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match *self {
            Self::Flip(at, bit) if len > 0 => bytes[at.index(len)] ^= 1 << bit,
            Self::Set(at, byte) if len > 0 => bytes[at.index(len)] = byte,
            Self::Insert(at, byte) => bytes.insert(at.index(len + 1), byte),
            Self::Remove(at) if len > 0 => {
                bytes.remove(at.index(len));
            }
            Self::Truncate(at) => bytes.truncate(at.index(len + 1)),
            _ => {}
        }
    }
}

/// A valid encoding with edits. With `reframe`, the edits hit the body only and the remaining
/// length is rewritten to fit, so the body parsers see them instead of a length mismatch.
fn mutated(
    model: &PacketModel,
    version: ProtocolVersion,
    mutations: &[Mutation],
    reframe: bool,
) -> Vec<u8> {
    let bytes = model.encode(version);
    if reframe {
        let header = FixedHeader::parse(&bytes, version, MAX_PACKET_SIZE).expect("valid header");
        let mut body = bytes[header.header_len..].to_vec();
        for m in mutations {
            m.apply(&mut body);
        }
        frame(bytes[0], &body)
    } else {
        let mut bytes = bytes;
        for m in mutations {
            m.apply(&mut bytes);
        }
        bytes
    }
}

/// A first byte: a packet type with its required flags most of the time, anything otherwise.
fn arb_first_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        1 => any::<u8>(),
        3 => (0u8..=15).prop_map(|t| t << 4 | if matches!(t, 6 | 8 | 10) { 0b0010 } else { 0 }),
    ]
}

/// A size limit: none most of the time, sometimes tiny.
fn arb_max() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(MAX_PACKET_SIZE), 1 => 0usize..64]
}

/// Feeds `stream` to the decoder from `start` bytes on, then exactly `needed` bytes at a time,
/// checking that each packet of `expected` comes out whole at its own end.
fn check_stream(
    stream: &[u8],
    expected: &[(Packet<'_>, usize)],
    version: ProtocolVersion,
    start: usize,
) -> Result<(), TestCaseError> {
    let mut offset = 0;
    let mut have = start.min(expected[0].1);
    for &(packet, len) in expected {
        loop {
            match decode(&stream[offset..offset + have], version, MAX_PACKET_SIZE) {
                Ok((decoded, used)) => {
                    prop_assert_eq!((decoded, used), (packet, len));
                    prop_assert_eq!(have, len, "decoded before the whole frame was given");
                    break;
                }
                Err(DecodeError::Incomplete { needed }) => {
                    prop_assert!(needed >= 1);
                    prop_assert!(have + needed <= len, "asked for bytes beyond the frame");
                    have += needed;
                }
                Err(error) => prop_assert!(false, "valid stream failed: {error}"),
            }
        }
        offset += len;
        have = 0;
    }
    prop_assert_eq!(offset, stream.len());
    Ok(())
}

fn stream_case(
    models: &[PacketModel],
    version: ProtocolVersion,
    start: usize,
) -> Result<(), TestCaseError> {
    let parts: Vec<_> = models.iter().map(PacketModel::parts).collect();
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for p in &parts {
        let packet = p.packet();
        let bytes = common::encode(&packet, version);
        expected.push((packet, bytes.len()));
        stream.extend_from_slice(&bytes);
    }
    check_stream(&stream, &expected, version, start)?;
    // Every prefix of the stream is either the first packet or a request for more.
    for cut in 0..stream.len().min(600) {
        check_decode(&stream[..cut], version, MAX_PACKET_SIZE)?;
    }
    Ok(())
}

fn arb_version() -> impl Strategy<Value = ProtocolVersion> {
    proptest::sample::select(VERSIONS.to_vec())
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn arbitrary_bytes(version in arb_version(), input in vec(any::<u8>(), 0..48), max in arb_max()) {
        check_decode(&input, version, max)?;
    }

    #[test]
    fn framed_random_bodies(
        version in arb_version(),
        first in arb_first_byte(),
        body in vec(any::<u8>(), 0..96),
        trailing in vec(any::<u8>(), 0..4),
        max in arb_max(),
    ) {
        let mut input = frame(first, &body);
        input.extend_from_slice(&trailing);
        check_decode(&input, version, max)?;
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_v3_1(
        model in arb_packet(ProtocolVersion::V3_1),
        mutations in vec(arb_mutation(), 1..4),
        reframe in any::<bool>(),
    ) {
        let input = mutated(&model, ProtocolVersion::V3_1, &mutations, reframe);
        check_decode(&input, ProtocolVersion::V3_1, MAX_PACKET_SIZE)?;
    }

    #[test]
    fn mutated_v3_1_1(
        model in arb_packet(ProtocolVersion::V3_1_1),
        mutations in vec(arb_mutation(), 1..4),
        reframe in any::<bool>(),
    ) {
        let input = mutated(&model, ProtocolVersion::V3_1_1, &mutations, reframe);
        check_decode(&input, ProtocolVersion::V3_1_1, MAX_PACKET_SIZE)?;
    }

    #[test]
    fn mutated_v5(
        model in arb_packet(ProtocolVersion::V5),
        mutations in vec(arb_mutation(), 1..4),
        reframe in any::<bool>(),
    ) {
        let input = mutated(&model, ProtocolVersion::V5, &mutations, reframe);
        check_decode(&input, ProtocolVersion::V5, MAX_PACKET_SIZE)?;
    }

    /// A valid encoding read with the wrong version (a 5.0 packet on a 3.1.1 connection and
    /// so on) is just more hostile input.
    #[test]
    fn valid_packets_of_another_version(
        model in arb_packet(ProtocolVersion::V5),
        written in arb_version(),
        read in arb_version(),
    ) {
        if written.is_v5() || !matches!(model, PacketModel::Auth(_)) {
            let input = model.encode(written);
            check_decode(&input, read, MAX_PACKET_SIZE)?;
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn stream_v3_1(models in vec(arb_packet(ProtocolVersion::V3_1), 1..4), start in 0usize..8) {
        stream_case(&models, ProtocolVersion::V3_1, start)?;
    }

    #[test]
    fn stream_v3_1_1(models in vec(arb_packet(ProtocolVersion::V3_1_1), 1..4), start in 0usize..8) {
        stream_case(&models, ProtocolVersion::V3_1_1, start)?;
    }

    #[test]
    fn stream_v5(models in vec(arb_packet(ProtocolVersion::V5), 1..4), start in 0usize..8) {
        stream_case(&models, ProtocolVersion::V5, start)?;
    }
}

/// The number of bytes `decode` took, or its error.
fn used(bytes: &[u8], version: ProtocolVersion) -> Result<usize, DecodeError> {
    decode(bytes, version, MAX_PACKET_SIZE).map(|(_, used)| used)
}

/// A 3.1.1 CONNECT (client "c", clean session) whose first byte is `first`.
fn connect_v3_1_1(first: u8) -> Vec<u8> {
    frame(
        first,
        &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c'],
    )
}

/// Regression: a CONNECT's fixed header flags were only checked when the caller passed 3.1.1
/// or 5.0, although the CONNECT announces its own level. A 3.1.1 CONNECT with a reserved
/// flag set ([MQTT-2.2.2-2] of 3.1.1) was accepted when decoded on a 3.1 connection.
#[test]
fn connect_header_flags_are_checked_whatever_the_version() {
    let bad = connect_v3_1_1(0x11);
    let invalid = Err(DecodeError::InvalidHeaderFlags {
        packet: fulmar_core::codec::PacketType::Connect,
        flags: 1,
    });
    for version in VERSIONS {
        assert_eq!(used(&bad, version), invalid, "{version}");
        // Rejected on the first byte alone, before the rest arrives.
        assert_eq!(used(&bad[..1], version), invalid, "{version}");
        assert_eq!(used(&connect_v3_1_1(0x10), version), Ok(bad.len()));
    }
}

/// Regression: MQTT 5.0 requires every variable byte integer in its shortest form
/// ([MQTT-1.5.5-1] of 5.0); longer forms were accepted. 3.1.1 sets no such rule for the
/// remaining length, so there they are still read.
#[test]
fn overlong_var_ints_are_malformed_in_5_0_only() {
    let v5 = ProtocolVersion::V5;
    let invalid = Err(DecodeError::InvalidVarInt);
    // PINGREQ with remaining length 0 written in two bytes.
    let overlong_ping = [0xC0, 0x80, 0x00];
    assert_eq!(used(&overlong_ping, v5), invalid);
    assert_eq!(
        used(&overlong_ping[..2], v5),
        Err(DecodeError::Incomplete { needed: 1 })
    );
    for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
        assert_eq!(used(&overlong_ping, version), Ok(3));
    }
    // 5.0 PUBLISH to "a": an empty property block whose length 0 takes two bytes.
    assert_eq!(
        used(&[0x30, 0x05, 0x00, 0x01, b'a', 0x80, 0x00], v5),
        invalid
    );
    // Payload Format Indicator with its identifier 0x01 written as 0x81 0x00.
    let publish = [0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x81, 0x00, 0x01];
    assert_eq!(used(&publish, v5), invalid);
    // Subscription Identifier 1 written as 0x81 0x00, then in one byte.
    let publish = [0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x0B, 0x81, 0x00];
    assert_eq!(used(&publish, v5), invalid);
    let publish = [0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x0B, 0x01];
    assert_eq!(used(&publish, v5), Ok(publish.len()));

    // A CONNECT is judged by the level it announces, whatever the connection's version.
    let body_v5 = [0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c'];
    let body_v3 = [0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c'];
    for version in VERSIONS {
        let mut connect = vec![0x10, 0x80 | body_v5.len() as u8, 0x00];
        connect.extend_from_slice(&body_v5);
        assert_eq!(used(&connect, version), invalid, "{version}");
        let mut connect = vec![0x10, 0x80 | body_v3.len() as u8, 0x00];
        connect.extend_from_slice(&body_v3);
        assert_eq!(used(&connect, version), Ok(connect.len()), "{version}");
    }
}
