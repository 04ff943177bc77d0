//! Support code for the `fulmar-core` codec fuzz targets in `fuzz_targets/`.
//!
//! - [`check`]: the encoder's contract (exact `encoded_len`, nothing written on error) and
//!   [`check::Lists`], which rebuilds a decoded packet from caller-owned item slices as a
//!   [`check::Built`] (the rebuilt packet, holding a CONNECT's fields by value).
//! - [`model`]: an owned packet model with `#[derive(Arbitrary)]`, the MQTT validity rules
//!   restated from the specifications, and the documented version downgrades.
//! - [`host`]: taking the broker's output as a host does, checking it decodes; the tiny
//!   storage and limits the broker targets share.
//! - [`seeds`]: hand-written and captured packets that `tests/seeds.rs` writes to `seeds/`.
//!
//! Run a target from `core/` with `cargo +nightly fuzz run <target> <corpus> fuzz/seeds/<target>`.

use fulmar_core::codec::{MAX_PACKET_SIZE, ProtocolVersion};

pub mod check;
pub mod host;
pub mod model;
pub mod seeds;

/// Every protocol version, oldest first.
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Packet size limits the `decode` target chooses from; the first imposes none.
pub const LIMITS: [usize; 8] = [MAX_PACKET_SIZE, 1 << 16, 1024, 256, 64, 16, 4, 2];

/// Reads the selector byte that starts every `decode` input: `byte % 3` picks the version
/// from [`VERSIONS`], `byte / 3 % 8` the limit from [`LIMITS`]. So 0, 1 and 2 are 3.1, 3.1.1
/// and 5.0 without a limit, which is what the seed files use.
pub fn select(byte: u8) -> (ProtocolVersion, usize) {
    let version = VERSIONS[usize::from(byte % 3)];
    let limit = LIMITS[usize::from(byte / 3) % LIMITS.len()];
    (version, limit)
}

/// The selector byte for `version` without a size limit.
pub fn selector(version: ProtocolVersion) -> u8 {
    match version {
        ProtocolVersion::V3_1 => 0,
        ProtocolVersion::V3_1_1 => 1,
        ProtocolVersion::V5 => 2,
    }
}
