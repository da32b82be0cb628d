//! `init`: writes a working instance into a directory, keeping every file that exists.
//!
//! The templates are generic: the modes run an agent CLI when one is installed and this
//! binary's own checks otherwise, so `run-cycle` succeeds in any directory; each mode file
//! says in a comment what to put there for a real project.

use std::path::{Path, PathBuf};

use crate::exit::Error;
use crate::instance::Instance;
use crate::recorder::Recorder;

const SCHEDULES_TEMPLATE: &str = include_str!("../templates/schedules.json");
const MODE_TEMPLATES: &[(&str, &str)] = &[
    (
        "implementation",
        include_str!("../templates/modes/implementation.md"),
    ),
    (
        "validation",
        include_str!("../templates/modes/validation.md"),
    ),
    ("quality", include_str!("../templates/modes/quality.md")),
    (
        "integration",
        include_str!("../templates/modes/integration.md"),
    ),
    ("planning", include_str!("../templates/modes/planning.md")),
];
const TODO_TEMPLATE: &str = "# TODO\n\nThe loop's advisory plan: open items are handed to every mode.\n\n- [ ] Describe the first task here\n";

/// What `init` did, file by file.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Initialized {
    pub written: Vec<PathBuf>,
    /// Files that existed and were left alone.
    pub kept: Vec<PathBuf>,
}

pub fn init(target: &Path) -> Result<Initialized, Error> {
    let inst = Instance::new(target);
    let mut done = Initialized::default();
    let cannot = |path: &Path, err: std::io::Error| {
        Error::Failed(format!("cannot write {}: {err}", path.display()))
    };
    let files = std::iter::once((inst.schedules(), SCHEDULES_TEMPLATE))
        .chain(
            MODE_TEMPLATES
                .iter()
                .map(|(slug, text)| (inst.mode_file(slug), *text)),
        )
        .chain(std::iter::once((inst.todo(), TODO_TEMPLATE)));
    for (path, text) in files {
        if path.exists() {
            done.kept.push(path);
            continue;
        }
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|err| cannot(&path, err))?;
        done.written.push(path);
    }
    let memory = inst.memory();
    if memory.exists() {
        done.kept.push(memory);
    } else {
        std::fs::write(&memory, crate::memory::initial_text())
            .map_err(|err| cannot(&memory, err))?;
        done.written.push(memory);
    }
    let timing = inst.timing();
    let had_timing = timing.exists();
    Recorder::inline_for_instance(&inst)
        .ensure_header()
        .map_err(Error::failed)?;
    if had_timing {
        done.kept.push(timing);
    } else {
        done.written.push(timing);
    }
    Ok(done)
}
