//! Links the `loop-orchestrator` binary as a fixed-address executable on Linux.
//!
//! chrono-tz compiles every time zone's transitions into static tables that hold
//! pointers (each transition names its abbreviation): 1.2 MB of `.data.rel.ro`, 41,000
//! relocations. A position-independent executable has the dynamic loader rewrite all of
//! them at every start, before `main`, touching some 300 pages: `loop-orchestrator
//! --version` took 3.6 ms and a five-mode `run-cycle` 14.1 ms; linked at a fixed address,
//! 2.1 ms and 12.1 ms (figure 5 in BENCHMARKS.md). The tables are then final in the file
//! and the kernel maps them as they are read.
//!
//! What this gives up is address randomization of the executable's own image; shared
//! libraries, heap and stack stay randomized. The binary reads only files its user
//! controls, and whoever can edit them can already run any command through a mode.
//! Set `LOOP_ORCHESTRATOR_PIE=1` when building to keep the default position-independent
//! link.

fn main() {
    println!("cargo:rerun-if-env-changed=LOOP_ORCHESTRATOR_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let keep_pie = std::env::var_os("LOOP_ORCHESTRATOR_PIE").is_some_and(|v| v != "0");
    if linux && !keep_pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
