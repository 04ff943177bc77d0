//! The seed corpus: real MQTT packets, written by hand from the layouts of MQTT 3.1,
//! 3.1.1 and 5.0 chapter 3, plus byte streams captured from Eclipse Mosquitto 2.0.11
//! clients and broker.
//!
//! Hand-written seeds list their bytes field by field, so a reader can check each against
//! the specification; none of them comes from this codec's encoder. `tests/seeds.rs`
//! checks that every seed decodes to the packets it names and that `seeds/<target>/<name>`
//! holds its selector byte ([`crate::selector`]) followed by the bytes; run it with
//! `FULMAR_WRITE_SEEDS=1` to write the files instead.
//!
//! The captures were taken through a small TCP proxy between `mosquitto_pub` /
//! `mosquitto_sub` (Debian `mosquitto-clients` 2.0.11) and `mosquitto` on 127.0.0.1, e.g.
//! `mosquitto_pub -V mqttv5 -i fulmar-pub5 -u carol -P pw5 --will-topic … -D connect
//! session-expiry-interval 300 -D publish user-property unit celsius … -q 1 -t
//! sensors/lab/temp -m 22.25`; each is one direction of one connection, packet by packet.

use fulmar_core::codec::{PacketType, ProtocolVersion};

use PacketType::*;
use ProtocolVersion::{V3_1, V3_1_1, V5};

/// One seed: a packet or a stream of packets as one side of a connection sends them.
#[derive(Debug, Clone, Copy)]
pub struct Seed {
    /// The file name under `seeds/<target>/`.
    pub name: &'static str,
    /// The protocol version of the connection.
    pub version: ProtocolVersion,
    /// The bytes, in pieces that follow the packet layout.
    pub parts: &'static [&'static [u8]],
    /// The packets the bytes hold, in order.
    pub packets: &'static [PacketType],
}

impl Seed {
    /// The seed's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.parts.concat()
    }

    /// The seed file's contents: the selector byte, then the bytes.
    pub fn file(&self) -> Vec<u8> {
        let mut file = vec![crate::selector(self.version)];
        file.extend(self.parts.iter().copied().flatten());
        file
    }
}

/// Every seed. Laid out by hand so each line is one field of the packet.
#[rustfmt::skip]
pub const SEEDS: &[Seed] = &[
    // ---- CONNECT (§3.1) ----
    Seed {
        name: "connect-v31-will-user-password",
        version: V3_1,
        parts: &[
            &[0x10, 65],                    // CONNECT, remaining length
            &[0, 6], b"MQIsdp", &[3],       // protocol name and level (3.1)
            &[0b1100_1110],                 // user, password, will QoS 1, will, clean session
            &[0, 60],                       // keep alive
            &[0, 9], b"sensor-31",          // client identifier
            &[0, 16], b"status/sensor-31",  // will topic
            &[0, 7], b"offline",            // will message
            &[0, 5], b"alice",              // user name
            &[0, 6], b"s3cret",             // password
        ],
        packets: &[Connect],
    },
    Seed {
        name: "connect-v311-will-user-password",
        version: V3_1_1,
        parts: &[
            &[0x10, 58],
            &[0, 4], b"MQTT", &[4],
            &[0b1111_0110],                 // user, password, will retain, will QoS 2, will, clean
            &[0, 30],
            &[0, 10], b"sensor-311",
            &[0, 17], b"status/sensor-311",
            &[0, 4], b"gone",
            &[0, 3], b"bob",
            &[0, 4], &[0xDE, 0xAD, 0xBE, 0xEF], // password: binary data
        ],
        packets: &[Connect],
    },
    Seed {
        name: "connect-v5-properties-will-user-password",
        version: V5,
        parts: &[
            &[0x10, 0xA5, 0x01],            // remaining length 165: two-byte varint
            &[0, 4], b"MQTT", &[5],
            &[0b1100_1110],                 // user, password, will QoS 1, will, clean start
            &[0, 120],
            &[52],                          // property length
            &[0x11, 0, 0, 0x0E, 0x10],      // Session Expiry Interval 3600
            &[0x21, 0, 32],                 // Receive Maximum 32
            &[0x27, 0, 1, 0, 0],            // Maximum Packet Size 65536
            &[0x22, 0, 10],                 // Topic Alias Maximum 10
            &[0x17, 1],                     // Request Problem Information
            &[0x26, 0, 6], b"region", &[0, 2], b"eu", // User Property
            &[0x15, 0, 11], b"SCRAM-SHA-1", // Authentication Method
            &[0x16, 0, 4, 1, 2, 3, 4],      // Authentication Data
            &[0, 8], b"sensor-5",           // client identifier
            &[54],                          // will property length
            &[0x18, 0, 0, 0, 30],           // Will Delay Interval 30
            &[0x01, 1],                     // Payload Format Indicator: UTF-8
            &[0x02, 0, 0, 0x02, 0x58],      // Message Expiry Interval 600
            &[0x03, 0, 10], b"text/plain",  // Content Type
            &[0x08, 0, 14], b"status/replies", // Response Topic
            &[0x09, 0, 2, 0xAB, 0xCD],      // Correlation Data
            &[0x26, 0, 1], b"k", &[0, 1], b"v",
            &[0, 15], b"status/sensor-5",   // will topic
            &[0, 7], b"offline",            // will payload
            &[0, 5], b"carol",
            &[0, 2], b"pw",
        ],
        packets: &[Connect],
    },
    // ---- CONNACK (§3.2) ----
    Seed {
        name: "connack-v31-not-authorized",
        version: V3_1,
        parts: &[&[0x20, 2], &[0], &[5]], // reserved byte, return code 5
        packets: &[ConnAck],
    },
    Seed {
        name: "connack-v311-session-present",
        version: V3_1_1,
        parts: &[&[0x20, 2], &[0x01], &[0]], // Session Present, accepted
        packets: &[ConnAck],
    },
    Seed {
        name: "connack-v5-properties",
        version: V5,
        parts: &[
            &[0x20, 56],
            &[0x00, 0x00],                  // flags, Success
            &[53],
            &[0x24, 1],                     // Maximum QoS 1
            &[0x25, 0],                     // Retain Available: no
            &[0x27, 0, 0x10, 0, 0],         // Maximum Packet Size 1 MiB
            &[0x12, 0, 9], b"auto-7f3a",    // Assigned Client Identifier
            &[0x22, 0, 16],                 // Topic Alias Maximum 16
            &[0x13, 0, 60],                 // Server Keep Alive 60
            &[0x28, 1],                     // Wildcard Subscription Available
            &[0x29, 1],                     // Subscription Identifiers Available
            &[0x2A, 0],                     // Shared Subscription Available: no
            &[0x1A, 0, 14], b"resp/auto-7f3a", // Response Information
            &[0x21, 0, 100],                // Receive Maximum 100
        ],
        packets: &[ConnAck],
    },
    // ---- PUBLISH (§3.3) ----
    Seed {
        name: "publish-v311-qos0",
        version: V3_1_1,
        parts: &[&[0x30, 17], &[0, 11], b"sensors/hum", b"48.5"],
        packets: &[Publish],
    },
    Seed {
        name: "publish-v311-qos1-retain",
        version: V3_1_1,
        parts: &[&[0x33, 25], &[0, 19], b"home/lights/kitchen", &[0, 10], b"on"],
        packets: &[Publish],
    },
    Seed {
        name: "publish-v31-qos2-dup",
        version: V3_1,
        parts: &[&[0x3C, 18], &[0, 10], b"alarm/door", &[0x12, 0x34], b"open"],
        packets: &[Publish],
    },
    Seed {
        name: "publish-v5-qos1-properties",
        version: V5,
        parts: &[
            &[0x32, 94],
            &[0, 16], b"sensors/lab/temp",
            &[0, 7],                        // packet identifier
            &[63],
            &[0x01, 1],                     // Payload Format Indicator
            &[0x02, 0, 0, 0, 60],           // Message Expiry Interval 60
            &[0x23, 0, 3],                  // Topic Alias 3
            &[0x08, 0, 9], b"reply/lab",    // Response Topic
            &[0x09, 0, 4, 0xDE, 0xAD, 0xBE, 0xEF], // Correlation Data
            &[0x26, 0, 4], b"unit", &[0, 1], b"C",
            &[0x0B, 0xAC, 0x02],            // Subscription Identifier 300 (two-byte varint)
            &[0x0B, 5],                     // and 5: may repeat in PUBLISH
            &[0x03, 0, 16], b"application/json",
            br#"{"t":22.5}"#,
        ],
        packets: &[Publish],
    },
    Seed {
        name: "publish-v5-qos0-topic-alias",
        version: V5,
        parts: &[&[0x30, 10], &[0, 0], &[3, 0x23, 0, 3], b"23.0"], // empty topic, alias 3
        packets: &[Publish],
    },
    // ---- PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-§3.7) ----
    Seed {
        name: "puback-v311",
        version: V3_1_1,
        parts: &[&[0x40, 2], &[0, 10]],
        packets: &[PubAck],
    },
    Seed {
        name: "puback-v5-reason-string",
        version: V5,
        parts: &[
            &[0x40, 21],
            &[0, 7],
            &[0x10],                        // No matching subscribers
            &[17], &[0x1F, 0, 14], b"no subscribers",
        ],
        packets: &[PubAck],
    },
    Seed {
        name: "pubrec-v5-code-only",
        version: V5,
        parts: &[&[0x50, 3], &[0, 8], &[0x97]], // Quota exceeded, property length left out
        packets: &[PubRec],
    },
    Seed {
        name: "pubrel-v31-dup",
        version: V3_1,
        parts: &[&[0x6A, 2], &[0x12, 0x34]], // 3.1 lets a resent PUBREL carry DUP
        packets: &[PubRel],
    },
    Seed {
        name: "pubrel-v5-not-found",
        version: V5,
        parts: &[
            &[0x62, 17],
            &[0, 8],
            &[0x92],                        // Packet Identifier not found
            &[13], &[0x26, 0, 5], b"trace", &[0, 3], b"abc",
        ],
        packets: &[PubRel],
    },
    Seed {
        name: "pubcomp-v311",
        version: V3_1_1,
        parts: &[&[0x70, 2], &[0, 8]],
        packets: &[PubComp],
    },
    // ---- SUBSCRIBE, SUBACK (§3.8, §3.9) ----
    Seed {
        name: "subscribe-v311-three-filters",
        version: V3_1_1,
        parts: &[
            &[0x82, 22],
            &[0, 11],
            &[0, 3], b"a/b", &[0],
            &[0, 5], b"c/+/d", &[1],
            &[0, 3], b"e/#", &[2],
        ],
        packets: &[Subscribe],
    },
    Seed {
        name: "subscribe-v5-options-properties",
        version: V5,
        parts: &[
            &[0x82, 78],
            &[0, 12],
            &[14],
            &[0x0B, 42],                    // Subscription Identifier 42
            &[0x26, 0, 3], b"app", &[0, 4], b"demo",
            &[0, 14], b"sensors/+/temp", &[0b0000_0001], // QoS 1
            &[0, 21], b"$share/workers/jobs/#", &[0b0000_0001],
            &[0, 8], b"alerts/#", &[0b0010_1110], // QoS 2, no local, RAP, retain handling 2
            &[0, 6], b"config", &[0b0001_0000],   // QoS 0, retain handling 1
        ],
        packets: &[Subscribe],
    },
    Seed {
        name: "suback-v311",
        version: V3_1_1,
        parts: &[&[0x90, 5], &[0, 11], &[0x00, 0x01, 0x80]], // granted 0, granted 1, failure
        packets: &[SubAck],
    },
    Seed {
        name: "suback-v5-reason-string",
        version: V5,
        parts: &[
            &[0x90, 28],
            &[0, 12],
            &[21], &[0x1F, 0, 18], b"wildcards disabled",
            &[0x01, 0x9E, 0xA2, 0x00],
        ],
        packets: &[SubAck],
    },
    // ---- UNSUBSCRIBE, UNSUBACK (§3.10, §3.11) ----
    Seed {
        name: "unsubscribe-v311",
        version: V3_1_1,
        parts: &[&[0xA2, 14], &[0, 13], &[0, 3], b"a/b", &[0, 5], b"c/+/d"],
        packets: &[Unsubscribe],
    },
    Seed {
        name: "unsubscribe-v5-user-property",
        version: V5,
        parts: &[
            &[0xA2, 31],
            &[0, 14],
            &[18], &[0x26, 0, 6], b"reason", &[0, 7], b"cleanup",
            &[0, 8], b"alerts/#",
        ],
        packets: &[Unsubscribe],
    },
    Seed {
        name: "unsuback-v311",
        version: V3_1_1,
        parts: &[&[0xB0, 2], &[0, 13]],
        packets: &[UnsubAck],
    },
    Seed {
        name: "unsuback-v5-codes",
        version: V5,
        parts: &[&[0xB0, 5], &[0, 14], &[0], &[0x00, 0x11]], // Success, No subscription existed
        packets: &[UnsubAck],
    },
    // ---- PINGREQ, PINGRESP, DISCONNECT, AUTH (§3.12-§3.15) ----
    Seed {
        name: "pingreq",
        version: V3_1_1,
        parts: &[&[0xC0, 0]],
        packets: &[PingReq],
    },
    Seed {
        name: "pingresp",
        version: V5,
        parts: &[&[0xD0, 0]],
        packets: &[PingResp],
    },
    Seed {
        name: "disconnect-v311",
        version: V3_1_1,
        parts: &[&[0xE0, 0]],
        packets: &[Disconnect],
    },
    Seed {
        name: "disconnect-v5-with-will",
        version: V5,
        parts: &[
            &[0xE0, 30],
            &[0x04],                        // Disconnect with Will Message
            &[28],
            &[0x11, 0, 1, 0x51, 0x80],      // Session Expiry Interval 86400
            &[0x1F, 0, 13], b"going offline",
            &[0x26, 0, 1], b"k", &[0, 1], b"v",
        ],
        packets: &[Disconnect],
    },
    Seed {
        name: "disconnect-v5-server-moved",
        version: V5,
        parts: &[
            &[0xE0, 18],
            &[0x9D],                        // Server moved
            &[16], &[0x1C, 0, 13], b"mqtt2.example",
        ],
        packets: &[Disconnect],
    },
    Seed {
        name: "auth-v5-continue",
        version: V5,
        parts: &[
            &[0xF0, 23],
            &[0x18],                        // Continue authentication
            &[21],
            &[0x15, 0, 11], b"SCRAM-SHA-1",
            &[0x16, 0, 4], b"r=ab",
        ],
        packets: &[Auth],
    },
    // ---- Captured from Mosquitto 2.0.11 ----
    Seed {
        name: "mosquitto-pub-v31",
        version: V3_1,
        parts: &[
            b"\x10\x45\x00\x06MQIsdp\x03\xCE\x00\x3C\x00\x0Cfulmar-pub31\x00\x14clients/fulmar-pub31\x00\x04gone\x00\x05alice\x00\x06secret",
            b"\x32\x1C\x00\x14sensors/kitchen/temp\x00\x0121.5",
            b"\xE0\x00",
        ],
        packets: &[Connect, Publish, Disconnect],
    },
    Seed {
        name: "mosquitto-pub-v311-qos2",
        version: V3_1_1,
        parts: &[
            b"\x10\x47\x00\x04MQTT\x04\xE6\x00\x3C\x00\x0Dfulmar-pub311\x00\x15clients/fulmar-pub311\x00\x07offline\x00\x03bob\x00\x07hunter2",
            b"\x35\x1B\x00\x15sensors/hall/humidity\x00\x01\x34\x38",
            b"\x62\x02\x00\x01",
            b"\xE0\x00",
        ],
        packets: &[Connect, Publish, PubRel, Disconnect],
    },
    Seed {
        name: "mosquitto-broker-v311-qos2",
        version: V3_1_1,
        parts: &[b"\x20\x02\x00\x00", b"\x50\x02\x00\x01", b"\x70\x02\x00\x01"],
        packets: &[ConnAck, PubRec, PubComp],
    },
    Seed {
        name: "mosquitto-pub-v5-properties",
        version: V5,
        parts: &[
            b"\x10\x65\x00\x04MQTT\x05\xD6\x00\x3C\x14\x11\x00\x00\x01\x2C\x21\x00\x14\x26\x00\x04site\x00\x03lab\x00\x0Bfulmar-pub5\x12\x18\x00\x00\x00\x0A\x03\x00\x0Atext/plain\x00\x13clients/fulmar-pub5\x00\x03bye\x00\x05carol\x00\x03pw5",
            b"\x32\x52\x00\x10sensors/lab/temp\x00\x01\x38\x26\x00\x04unit\x00\x07celsius\x03\x00\x0Atext/plain\x02\x00\x00\x0E\x10\x08\x00\x0Creplies/pub5\x09\x00\x040a0b22.25",
            b"\xE0\x00",
        ],
        packets: &[Connect, Publish, Disconnect],
    },
    Seed {
        name: "mosquitto-broker-v5-puback",
        version: V5,
        parts: &[b"\x20\x09\x00\x00\x06\x22\x00\x0A\x21\x00\x14", b"\x40\x03\x00\x01\x10"],
        packets: &[ConnAck, PubAck],
    },
    Seed {
        name: "mosquitto-sub-v5",
        version: V5,
        parts: &[
            b"\x10\x1B\x00\x04MQTT\x05\x02\x00\x3C\x03\x21\x00\x14\x00\x0Bfulmar-sub5",
            b"\x82\x40\x00\x01\x11\x26\x00\x06client\x00\x04sub5\x0B\x07\x00\x0Esensors/+/temp\x02\x00\x08alerts/#\x02\x00\x0D$share/g/jobs\x02",
            b"\xE0\x00",
        ],
        packets: &[Connect, Subscribe, Disconnect],
    },
    Seed {
        name: "mosquitto-sub-v311",
        version: V3_1_1,
        parts: &[
            b"\x10\x19\x00\x04MQTT\x04\x02\x00\x3C\x00\x0Dfulmar-sub311",
            b"\x82\x0E\x00\x01\x00\x09sensors/#\x01",
            b"\xA2\x0D\x00\x02\x00\x09old/topic",
            b"\xE0\x00",
        ],
        packets: &[Connect, Subscribe, Unsubscribe, Disconnect],
    },
    Seed {
        name: "mosquitto-broker-v311-sub",
        version: V3_1_1,
        parts: &[
            b"\x20\x02\x00\x00",
            b"\x90\x03\x00\x01\x01",
            b"\x33\x1B\x00\x15sensors/hall/humidity\x00\x01\x34\x38",
            b"\xB0\x02\x00\x02",
        ],
        packets: &[ConnAck, SubAck, Publish, UnsubAck],
    },
];
