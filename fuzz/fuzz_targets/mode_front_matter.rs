//! `mode::Mode::parse` on arbitrary UTF-8 text.
//!
//! Properties: no panic; an error points at line ≥ 1, column ≥ 1, on a line that exists;
//! an accepted mode has at least one argv, each with a non-empty program, and no zero
//! timeout.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use loop_orchestrator::mode::Mode;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.matches('\n').count() + 1;
    match Mode::parse("fuzz", Path::new("modes/fuzz.md"), text) {
        Err(problem) => {
            assert!(
                problem.line >= 1 && problem.column >= 1,
                "problem at line/column 0: {problem:?}"
            );
            assert!(
                problem.line <= lines,
                "problem past the end of the text ({lines} lines): {problem:?}"
            );
        }
        Ok(mode) => {
            assert!(!mode.commands.is_empty(), "mode without a command");
            for argv in &mode.commands {
                assert!(
                    argv.first().is_some_and(|p| !p.is_empty()),
                    "accepted an argv without a program: {argv:?}"
                );
            }
            assert!(
                mode.timeout.is_none_or(|t| !t.is_zero()),
                "accepted a zero timeout"
            );
        }
    }
});
