//! Source paths in firmware builds, relative to the repository and to cargo's registry.
//!
//! A firmware keeps the source file of each panic location as a string in flash (what its
//! panic handler logs). Cargo gives rustc absolute paths for packages outside the firmware
//! workspace (`fulmar-core`, every crate from the registry), so those strings, and the
//! flash figures `cargo xtask size` holds to a goal, would change with where the checkout
//! and `$CARGO_HOME` are: by about a hundred bytes between two checkouts, 1.7 KB in all on
//! the NUCLEO-H743ZI. Every firmware build of `cargo xtask` and of the end-to-end tests
//! passes [`config`] to cargo (the same flags everywhere, so one build serves them all),
//! and a panic then names `core/src/blob.rs` or `smoltcp-0.13.1/src/wire/tcp.rs`: what
//! cargo's unstable `trim-paths` would do, on stable.
//!
//! Shared as source by `xtask` and `fulmar-tests` (`#[path]`), which depend on nothing
//! in common.

use std::path::{Path, PathBuf};

/// The `--config` argument for cargo that remaps, for bare-metal targets only (the
/// firmware, not build scripts), the repository `root` and each registry source directory
/// of `$CARGO_HOME` (default `~/.cargo`) to relative paths. Put it before the subcommand.
pub(crate) fn config(root: &Path) -> String {
    let mut prefixes = vec![root.to_path_buf()];
    if let Some(home) = cargo_home() {
        // One directory per registry index (`index.crates.io-<hash>`), sorted: the flags,
        // and so cargo's fingerprints, are the same from one run to the next.
        let mut indexes: Vec<PathBuf> = std::fs::read_dir(home.join("registry").join("src"))
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        indexes.sort();
        prefixes.extend(indexes);
    }
    let flags: Vec<String> = prefixes
        .iter()
        .map(|prefix| toml_string(&format!("--remap-path-prefix={}=", prefix.display())))
        .collect();
    format!(
        "target.'cfg(target_os = \"none\")'.rustflags = [{}]",
        flags.join(", ")
    )
}

/// `$CARGO_HOME`, or `~/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    match std::env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home)),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")),
    }
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_is_remapped_for_bare_metal_targets_only() {
        let config = config(Path::new("/checkout/fulmar"));
        assert!(
            config.starts_with("target.'cfg(target_os = \"none\")'.rustflags = [\"--remap-path-prefix=/checkout/fulmar=\""),
            "{config}"
        );
        assert!(config.ends_with(']'), "{config}");
    }

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("tab\there"), r#""tab\u0009here""#);
    }
}
