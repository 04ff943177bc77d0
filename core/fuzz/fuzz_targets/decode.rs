//! Fuzzes `codec::decode` the way a stream host drives it.
//!
//! Input: one selector byte ([`fulmar_core_fuzz::select`]: the protocol version and a
//! packet size limit), then a byte stream. The stream is decoded packet after packet,
//! advancing by the bytes each packet took, until `Incomplete` or an error; after a
//! CONNECT the stream continues in the version it announced, as on a broker.
//!
//! For every decoded packet:
//! - it took between 1 byte and the rest of the stream, and no more than the limit;
//! - decoding exactly those bytes gives the same packet, and so does a limit equal to
//!   its size, while one byte less is `PacketTooLarge`;
//! - every shorter prefix is `Incomplete`, with `needed` exact once the fixed header is in;
//! - encoding it for the same version (a CONNECT for its own) writes `encoded_len` bytes,
//!   never more than it took, decodes to an equal packet, and re-encodes to the same bytes;
//!   shorter buffers get `InsufficientSize` and are left untouched;
//! - a CONNECT (which encodes as the body the decoder validated) gives the same bytes when
//!   its fields, read back by `ConnectPacket::get`, are encoded as a caller's `Connect`;
//! - its lists iterate over every validated byte, and rebuilt from caller-owned items the
//!   packet is equal and encodes to no more bytes.
//!
//! For the error that ends the stream: `Incomplete` asks for at least one byte, exactly
//! the rest of the frame once the fixed header is in; any other error comes from the
//! frame alone, so decoding just the frame fails the same way.

#![no_main]

use fulmar_core::codec::{
    DecodeError, FixedHeader, MAX_PACKET_SIZE, Packet, ProtocolVersion, decode,
};
use fulmar_core_fuzz::check::{self, Lists};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let (mut version, limit) = fulmar_core_fuzz::select(selector);
    loop {
        match decode(rest, version, limit) {
            Ok((packet, used)) => {
                check_packet(rest, &packet, used, version, limit);
                if let Packet::Connect(connect) = &packet {
                    version = connect.get().protocol;
                }
                rest = &rest[used..];
            }
            Err(error) => {
                check_error(rest, error, version, limit);
                break;
            }
        }
    }
});

fn check_packet(
    rest: &[u8],
    packet: &Packet<'_>,
    used: usize,
    version: ProtocolVersion,
    limit: usize,
) {
    assert!(used > 0, "a packet took no bytes");
    assert!(used <= rest.len(), "took {used} of {} bytes", rest.len());
    assert!(
        used <= limit,
        "a packet of {used} bytes passed a limit of {limit}"
    );
    let frame = &rest[..used];
    assert_eq!(decode(frame, version, limit), Ok((*packet, used)));
    assert_eq!(decode(frame, version, used), Ok((*packet, used)));
    assert_eq!(
        decode(frame, version, used - 1),
        Err(DecodeError::PacketTooLarge {
            size: used,
            max: used - 1
        })
    );

    let header = FixedHeader::parse(frame, version, limit).expect("header of a decoded packet");
    assert_eq!(header.packet_len(), used);
    assert_eq!(header.packet_type, packet.packet_type());
    for len in 0..used {
        match decode(&frame[..len], version, limit) {
            Err(DecodeError::Incomplete { needed }) => {
                assert!(needed > 0, "Incomplete asks for 0 bytes");
                assert!(len + needed <= used, "asks for more than the frame holds");
                if len >= header.header_len {
                    assert_eq!(len + needed, used, "needed is not the rest of the frame");
                }
            }
            other => panic!("a {len}-byte prefix of a {used}-byte packet gave {other:?}"),
        }
    }

    // A CONNECT is always encoded, and read, in its own protocol.
    let version = match packet {
        Packet::Connect(connect) => connect.get().protocol,
        _ => version,
    };
    let encoded = check::encode(packet, version).expect("a decoded packet encodes");
    assert!(
        encoded.len() <= used,
        "re-encoding grew {used} bytes to {}",
        encoded.len()
    );
    let (again, again_used) =
        decode(&encoded, version, MAX_PACKET_SIZE).expect("the encoding decodes");
    assert_eq!(again_used, encoded.len());
    assert_eq!(again, *packet, "encode then decode changed the packet");
    assert_eq!(
        check::encode(&again, version),
        Ok(encoded.clone()),
        "encoding is not a fixpoint"
    );

    if let Packet::Connect(connect) = packet {
        let fields = connect.get();
        assert_eq!(
            check::encode(&Packet::from(&fields), version),
            Ok(encoded.clone()),
            "a CONNECT's fields do not encode to its wire body"
        );
    }

    check::lists_cover_wire_bytes(packet);
    let lists = Lists::of(packet);
    let built = lists.apply(*packet);
    let rebuilt = built.packet();
    assert_eq!(rebuilt, *packet);
    let rebuilt_encoded = check::encode(&rebuilt, version).expect("a rebuilt packet encodes");
    // Equal unless the peer sent variable byte integers longer than needed inside the
    // properties, which the decoded form copies and the rebuilt form writes minimally.
    assert!(rebuilt_encoded.len() <= encoded.len());
    let (from_items, _) =
        decode(&rebuilt_encoded, version, MAX_PACKET_SIZE).expect("the rebuilt packet decodes");
    assert_eq!(from_items, *packet);

    // Formatting walks every list once more.
    let _ = format!("{packet:?}");
}

fn check_error(rest: &[u8], error: DecodeError, version: ProtocolVersion, limit: usize) {
    let _ = (
        format!("{error}"),
        error.reason_code(),
        error.connect_return_code(),
    );
    let header = FixedHeader::parse(rest, version, limit);
    match error {
        DecodeError::Incomplete { needed } => {
            assert!(needed > 0, "Incomplete asks for 0 bytes");
            match header {
                Ok(header) => assert_eq!(rest.len() + needed, header.packet_len()),
                Err(DecodeError::Incomplete {
                    needed: header_needed,
                }) => {
                    assert_eq!(needed, header_needed);
                    assert!(rest.len() < 5, "a complete fixed header is Incomplete");
                }
                Err(other) => panic!("decode is Incomplete but the header is {other:?}"),
            }
        }
        error => {
            if let Ok(header) = header {
                let total = header.packet_len();
                assert!(
                    total <= rest.len(),
                    "{error:?} before the frame was complete"
                );
                assert_eq!(decode(&rest[..total], version, limit), Err(error));
            } else {
                assert_eq!(header, Err(error), "header and decode disagree");
            }
        }
    }
}
