//! Link options for the `pvedeploy` binary: packed relocations, the functions an agent runs laid out together, symbols stripped.
//!
//! - Relative relocations packed (RELR) on Linux with glibc. The binary is position-independent (ASLR), so the
//!   loader patches every absolute pointer at start. Stored the classic way (24 bytes each) that table is over
//!   4 MB, read in full at every start and kept resident. Packed, it is a few kilobytes: the process starts
//!   sooner and idles smaller, with the same hardening. Needs GNU ld 2.38+ or lld 15+ to link and glibc 2.36+ to
//!   run (Debian 12 has both; an older glibc refuses to load the binary, naming `GLIBC_ABI_DT_RELR`).
//! - The functions an agent runs, first and together (`link/functions.order`, made by
//!   `link/order-functions.py` from a `callgrind` run of a serving agent). The kernel maps a program's code
//!   in 64 KiB runs around each page it touches, so code scattered among 63 MB of `.text` made 40 MB of it
//!   resident in an idle agent that had run about 7 MB of it; laid out together, 15 MB (`docs/benchmarks.md`,
//!   session 17). Names that are not in the binary are skipped, so a stale list only lays out less. Only where
//!   the linker is known to be lld (rustc 1.90+ links `x86_64-unknown-linux-gnu` with its own lld unless told
//!   otherwise); `PVEDEPLOY_NO_ORDER=1` leaves it out.
//! - Release builds strip the symbol table here instead of in the Cargo profile: a profile's `strip` is part of
//!   the crate's metadata hash, which is part of every mangled name, so stripping in the profile would give the
//!   shipped binary other names than the symbolized one the list is made from. `PVEDEPLOY_KEEP_SYMBOLS=1` keeps
//!   them (for `perf`, `heaptrack`, `callgrind`) with the very same names.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/functions.order");
    for var in ["PVEDEPLOY_NO_RELR", "PVEDEPLOY_NO_ORDER", "PVEDEPLOY_KEEP_SYMBOLS", "RUSTC_LINKER"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if linux_gnu && std::env::var_os("PVEDEPLOY_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("link/functions.order");
    if std::env::var_os("PVEDEPLOY_NO_ORDER").is_none() && links_with_rust_lld() && order.is_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if linux_gnu && var("PROFILE") == "release" && std::env::var_os("PVEDEPLOY_KEEP_SYMBOLS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
}

/// Whether the binary is linked by the lld rustc ships: the default for `x86_64-unknown-linux-gnu` since
/// rustc 1.90, unless a linker is configured (`RUSTC_LINKER`, set by Cargo from `target.<triple>.linker`) or
/// the flags choose another (`-C linker…`, `-C link-self-contained…`, `-C link-arg…`).
fn links_with_rust_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") || std::env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.split('\x1f').any(|f| f.contains("linker") || f.contains("link-self-contained") || f.contains("link-arg") || f.contains("fuse-ld")) {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc).arg("-vV").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let release = text.lines().find_map(|l| l.strip_prefix("release: ")).unwrap_or("");
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
