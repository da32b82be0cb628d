//! Instance directories the figures run the binary on: schedules.json, trivial modes,
//! and the memory and timing files a fresh `init` would leave.

use std::path::Path;

use serde_json::{Value, json};

pub fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// schedules.json with these schedule entries and room for `max_concurrent_cycles`.
pub fn schedules_json(schedules: Vec<Value>, max_concurrent_cycles: usize) -> String {
    let doc = json!({
        "version": 1,
        "timezone": "UTC",
        "memory": { "max_lines": 300, "target_lines": 240 },
        "max_concurrent_cycles": max_concurrent_cycles,
        "shutdown_grace": "30s",
        "schedules": schedules,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// A mode that runs `true` with no prompt.
pub fn true_mode(dir: &Path, slug: &str) -> Result<(), String> {
    write(
        dir,
        &format!("modes/{slug}.md"),
        &format!(
            "+++\nname = \"{slug}\"\ncommand = [\"true\"]\nprompt = \"none\"\n+++\n# {slug}\n\
             Does nothing, quickly.\n"
        ),
    )
}

/// The memory file as `init` writes it.
pub fn fresh_memory(dir: &Path) -> Result<(), String> {
    write(
        dir,
        "persistent-memory.md",
        &loop_orchestrator::memory::initial_text(),
    )
}
