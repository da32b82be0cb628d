//! `init`: writes a working instance into a directory, keeping every file that exists.
//!
//! The templates are generic: the modes run an agent CLI when one is installed and this
//! binary's own checks otherwise, so `run-cycle` succeeds in any directory; each mode file
//! says in a comment what to put there for a real project.

use std::path::Path;

use crate::cycle::{MEMORY_FILE, TIMING_FILE, TODO_FILE};
use crate::timing::TimingFile;

const FILES: &[(&str, &str)] = &[
    ("schedules.json", include_str!("templates/schedules.json")),
    (
        "modes/implementation.md",
        include_str!("templates/modes/implementation.md"),
    ),
    (
        "modes/validation.md",
        include_str!("templates/modes/validation.md"),
    ),
    (
        "modes/quality.md",
        include_str!("templates/modes/quality.md"),
    ),
    (
        "modes/integration.md",
        include_str!("templates/modes/integration.md"),
    ),
    (
        "modes/planning.md",
        include_str!("templates/modes/planning.md"),
    ),
    (
        TODO_FILE,
        "# TODO\n\nThe loop's advisory plan: open items are handed to every mode.\n\n- [ ] Describe the first task here\n",
    ),
];

pub fn init(target: &Path) -> u8 {
    let mut written = Vec::new();
    let mut kept = Vec::new();
    for (name, text) in FILES {
        let path = target.join(name);
        if path.exists() {
            kept.push(*name);
            continue;
        }
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        if let Err(err) = result {
            eprintln!("cannot write {}: {err}", path.display());
            return crate::cli::EXIT_FAILED;
        }
        written.push(*name);
    }
    let memory = target.join(MEMORY_FILE);
    if memory.exists() {
        kept.push(MEMORY_FILE);
    } else if let Err(err) = std::fs::write(&memory, crate::memory::initial_text()) {
        eprintln!("cannot write {}: {err}", memory.display());
        return crate::cli::EXIT_FAILED;
    } else {
        written.push(MEMORY_FILE);
    }
    let timing = TimingFile::new(target.join(TIMING_FILE));
    let had_timing = timing.path().exists();
    if let Err(err) = timing.ensure_header() {
        eprintln!("{err}");
        return crate::cli::EXIT_FAILED;
    }
    if had_timing {
        kept.push(TIMING_FILE)
    } else {
        written.push(TIMING_FILE)
    }
    for name in &written {
        println!("wrote {}", target.join(name).display());
    }
    for name in &kept {
        println!("kept  {} (exists)", target.join(name).display());
    }
    println!(
        "next: loop-orchestrator --dir {} run-cycle",
        target.display()
    );
    crate::cli::EXIT_OK
}
