//! Keeps `seeds/` in step with [`fulmar_core_fuzz::seeds::SEEDS`].
//!
//! Every seed must decode, packet after packet, to exactly the packets it names, and
//! `seeds/<target>/<name>` must hold its selector byte and bytes. Set `FULMAR_WRITE_SEEDS=1`
//! to (re)write the files, removing any that no seed names.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use fulmar_core::codec::{MAX_PACKET_SIZE, Packet, decode};
use fulmar_core_fuzz::seeds::SEEDS;

/// The targets whose seed directory holds these seeds.
const TARGETS: [&str; 2] = ["decode", "roundtrip"];

#[test]
fn every_seed_decodes_to_the_packets_it_names() {
    for seed in SEEDS {
        let bytes = seed.bytes();
        let mut rest = &bytes[..];
        let mut version = seed.version;
        let mut types = Vec::new();
        while !rest.is_empty() {
            let (packet, used) = decode(rest, version, MAX_PACKET_SIZE)
                .unwrap_or_else(|e| panic!("{}: packet {}: {e}", seed.name, types.len() + 1));
            if let Packet::Connect(connect) = &packet {
                let protocol = connect.get().protocol;
                assert_eq!(protocol, seed.version, "{}", seed.name);
                version = protocol;
            }
            types.push(packet.packet_type());
            rest = &rest[used..];
        }
        assert_eq!(types, seed.packets, "{}", seed.name);
    }
}

#[test]
fn seed_files_match() {
    let names: BTreeSet<&str> = SEEDS.iter().map(|s| s.name).collect();
    assert_eq!(names.len(), SEEDS.len(), "two seeds share a name");
    let write = std::env::var_os("FULMAR_WRITE_SEEDS").is_some();
    for target in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        if write {
            fs::create_dir_all(&dir).unwrap();
        }
        for seed in SEEDS {
            let path = dir.join(seed.name);
            if write {
                fs::write(&path, seed.file()).unwrap();
            } else {
                let on_disk = fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e} (FULMAR_WRITE_SEEDS=1 writes it)", path.display())
                });
                assert_eq!(on_disk, seed.file(), "{} is stale", path.display());
            }
        }
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !names.contains(name.as_str()) {
                if write {
                    fs::remove_file(&path).unwrap();
                } else {
                    panic!("{} belongs to no seed", path.display());
                }
            }
        }
    }
}
