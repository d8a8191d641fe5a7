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
//!   resident in an idle agent that had run about 7 MB of it; laid out together, 14 MB (`docs/benchmarks.md`,
//!   session 17). Names that are not in the binary are skipped, so a stale list only lays out less. Only when
//!   the linker takes `--symbol-ordering-file` (lld, mold: rustup's rustc 1.90+ links
//!   `x86_64-unknown-linux-gnu` with its own lld; a distribution's rustc or GNU ld may not), which is found by
//!   linking an empty program with it and the build's own flags; `PVEDEPLOY_NO_ORDER=1` leaves it out. Dev
//!   builds get it too (the names match little there): the tests link the binary the way a release does.
//! - Release builds for Linux strip the symbol table here instead of in the Cargo profile: a profile's `strip`
//!   is part of the crate's metadata hash, which is part of every mangled name, so stripping in the profile
//!   would give the shipped binary other names than the symbolized one the list is made from.
//!   `PVEDEPLOY_KEEP_SYMBOLS=1` keeps them (for `perf`, `heaptrack`, `callgrind`) with the very same names, and a
//!   release build asked for debug info (`CARGO_PROFILE_RELEASE_DEBUG`) is not stripped.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/functions.order");
    for var in ["PVEDEPLOY_NO_RELR", "PVEDEPLOY_NO_ORDER", "PVEDEPLOY_KEEP_SYMBOLS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let linux = var("CARGO_CFG_TARGET_OS") == "linux";
    if linux && var("CARGO_CFG_TARGET_ENV") == "gnu" && std::env::var_os("PVEDEPLOY_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("link/functions.order");
    if linux && std::env::var_os("PVEDEPLOY_NO_ORDER").is_none() && order.is_file() && linker_takes_ordering() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if linux && var("PROFILE") == "release" && var("DEBUG") != "true" && std::env::var_os("PVEDEPLOY_KEEP_SYMBOLS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    }
}

/// Whether this build's linker takes `--symbol-ordering-file`: an empty program linked with rustc for the
/// target, with the build's flags and configured linker, and an empty ordering file. Any failure says no.
fn linker_takes_ordering() -> bool {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let (source, list, exe) = (out.join("probe.rs"), out.join("probe.order"), out.join("probe"));
    if std::fs::write(&source, "fn main() {}\n").and_then(|()| std::fs::write(&list, "")).is_err() {
        return false;
    }
    let mut rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    rustc.arg("--target").arg(std::env::var("TARGET").unwrap_or_default()).arg("-o").arg(&exe).arg(&source);
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    rustc.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Ok(linker) = std::env::var("RUSTC_LINKER") {
        rustc.arg("-C").arg(format!("linker={linker}"));
    }
    rustc.arg("-C").arg(format!("link-arg=-Wl,--symbol-ordering-file={}", list.display()));
    rustc.arg("-C").arg("link-arg=-Wl,--no-warn-symbol-ordering");
    rustc.output().is_ok_and(|o| o.status.success())
}
