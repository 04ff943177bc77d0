//! Links the binary with cortex-m-rt's `link.x` (which includes `memory.x`, found in this
//! crate's folder) and defmt's `defmt.x`.

fn main() {
    let here = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search={here}");
    for script in ["link.x", "defmt.x"] {
        println!("cargo:rustc-link-arg-bins=-T{script}");
    }
    // Identical code folding: the linker keeps one copy of functions whose machine code is
    // the same (monomorphized copies, interrupt stubs), 0.7 KB of flash here. Only for this
    // board's binary: rustflags would rebuild every dependency the boards share.
    println!("cargo:rustc-link-arg-bins=--icf=all");
    println!("cargo:rerun-if-changed=memory.x");
}
