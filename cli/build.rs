//! Lays the device path's code out together in optimised Linux builds.
//!
//! The fetcher's code is mapped from the binary, and the kernel maps every
//! page it touches plus the pages around it (fault-around, 64 KiB): with
//! one binary for every role, the 3 MiB of functions a fetch runs were
//! spread over 16 MiB of `.text`, and that much counted in the device's
//! RSS. `layout/fetch.ld` names those functions (made by
//! `scripts/fetch-layout.sh` from a profiled fetch; `fetch-device.ld` for
//! the device profile, whose symbols carry other hashes); the linker puts
//! them in one section, `.text.hot`, ahead of the rest. Names the file lists
//! that this build lacks are skipped: a stale file costs memory, never
//! correctness.
#![allow(missing_docs)]

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=layout");
    // A profile's symbols carry its own hashes: `layout/fetch-PROFILE.ld`
    // where the script was run on that profile's build, else release's.
    // The profile is the directory above `build/` in OUT_DIR.
    let out = env::var("OUT_DIR").unwrap_or_default();
    let profile = Path::new(&out).ancestors().nth(3).and_then(|p| p.file_name()).and_then(|p| p.to_str());
    let own = profile.map(|p| format!("layout/fetch-{p}.ld"));
    let layout = match own.as_deref().map(Path::new) {
        Some(own) if own.exists() => own,
        _ => Path::new("layout/fetch.ld"),
    };
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    // Debug builds are for tests: leave their link as it was.
    let optimised = env::var("OPT_LEVEL").is_ok_and(|o| o != "0");
    let off = env::var_os("IONSHARD_NO_LAYOUT").is_some();
    println!("cargo:rerun-if-env-changed=IONSHARD_NO_LAYOUT");
    // LLD (Rust's default here) and GNU ld take the script; mold and gold
    // do not take `INSERT`: leave the layout out rather than fail the link.
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let other_linker = ["mold", "gold"].iter().any(|l| flags.contains(&format!("ld={l}")));
    if other_linker {
        println!(
            "cargo:warning=linking with mold or gold: the fetch path's code layout (cli/layout/fetch.ld) is left out"
        );
    }
    if linux && optimised && !off && !other_linker && layout.exists() {
        let path = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(layout);
        println!("cargo:rustc-link-arg-bin=ionshard=-Wl,-T,{}", path.display());
    }
}
