//! Links the binary with cortex-m-rt's `link.x` (which includes `memory.x`, found in this
//! crate's folder) and defmt's `defmt.x`.

fn main() {
    let here = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search={here}");
    for script in ["link.x", "defmt.x"] {
        println!("cargo:rustc-link-arg-bins=-T{script}");
    }
    println!("cargo:rerun-if-changed=memory.x");
}
