//! Composes the markdown prompt a mode receives (SPEC §3).
//!
//! Order: the task; schedule, cycle and mode; the mode's instructions; the open items of
//! TODO.md; persistent-memory.md; the HANDOFF notes of earlier modes of this cycle; the last
//! HANDOFF of the schedule's previous cycle; the output protocol. The prompt is data: it is
//! written to a pipe or a file and never reaches a shell or argv.

use std::fmt::Write as _;

use crate::todo::TodoItem;

/// A HANDOFF note and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handoff {
    pub mode: String,
    pub cycle: String,
    pub text: String,
}

/// Everything a prompt is made of.
pub struct PromptParts<'a> {
    pub task: &'a str,
    pub schedule: &'a str,
    pub cycle: &'a str,
    pub mode: &'a str,
    pub mode_name: &'a str,
    pub attempt: u32,
    pub priority: &'a str,
    pub instructions: &'a str,
    pub open_items: &'a [&'a TodoItem],
    pub memory: &'a str,
    pub earlier: &'a [Handoff],
    pub previous_cycle: Option<&'a Handoff>,
}

/// At most this many open TODO items are listed; the rest are counted.
const MAX_ITEMS: usize = 50;

pub fn compose(p: &PromptParts<'_>) -> String {
    let mut out = String::with_capacity(4_096 + p.memory.len() + p.instructions.len());
    let _ = writeln!(out, "# Task\n\n{}\n", p.task.trim());
    let _ = writeln!(
        out,
        "## Context\n\n- schedule: {}\n- cycle: {}\n- mode: {} ({})\n- attempt: {}\n- priority: {}\n",
        p.schedule, p.cycle, p.mode, p.mode_name, p.attempt, p.priority
    );
    let _ = writeln!(out, "## Mode instructions\n\n{}\n", p.instructions.trim());
    let _ = writeln!(out, "## Open TODO items (advisory plan)\n");
    if p.open_items.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        for item in p.open_items.iter().take(MAX_ITEMS) {
            let path = if item.headings.is_empty() {
                String::new()
            } else {
                format!(" ({})", item.headings.join(" > "))
            };
            let _ = writeln!(
                out,
                "- [ ] {}. {}{} — TODO.md:{}",
                item.number, item.text, path, item.line
            );
        }
        if p.open_items.len() > MAX_ITEMS {
            let _ = writeln!(
                out,
                "- … and {} more open items",
                p.open_items.len() - MAX_ITEMS
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Persistent memory\n");
    let memory = p.memory.trim();
    // The file's own headings are demoted so they nest under this section.
    for line in memory.lines() {
        if line.starts_with('#') {
            let _ = writeln!(out, "##{line}");
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    if memory.is_empty() {
        let _ = writeln!(out, "Empty.");
    }
    out.push('\n');
    let _ = writeln!(out, "## Handoff from earlier modes of this cycle\n");
    if p.earlier.is_empty() {
        let _ = writeln!(out, "None: this is the first mode to run.\n");
    } else {
        for h in p.earlier {
            let _ = writeln!(out, "- {}: {}", h.mode, h.text);
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Handoff from the previous cycle\n");
    match p.previous_cycle {
        Some(h) => {
            let _ = writeln!(out, "- {} (cycle {}): {}\n", h.mode, h.cycle, h.text);
        }
        None => {
            let _ = writeln!(
                out,
                "None: no earlier cycle of this schedule left a note.\n"
            );
        }
    }
    out.push_str(PROTOCOL);
    out
}

const PROTOCOL: &str = "## Output protocol\n\n\
Print these lines on stdout, each at the start of a line:\n\
- `MEMORY <Section>: text` — keep a fact in persistent-memory.md (sections: Implementation Patterns, Commands, System Updates).\n\
- `HANDOFF: text` — a note for the later modes of this cycle and for the next cycle.\n\
- `BLOCKED: reason` — you cannot go on; the cycle stops and a person looks.\n\
The exit status tells success (0) or failure (anything else).\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_come_in_the_contract_order() {
        let item = TodoItem {
            number: 3,
            done: false,
            text: "Ship it".into(),
            headings: vec!["Roadmap".into()],
            line: 7,
        };
        let items = [&item];
        let earlier = [Handoff {
            mode: "implementation".into(),
            cycle: "c1".into(),
            text: "did X".into(),
        }];
        let previous = Handoff {
            mode: "planning".into(),
            cycle: "c0".into(),
            text: "next: Y".into(),
        };
        let text = compose(&PromptParts {
            task: "Advance the plan",
            schedule: "main-loop",
            cycle: "c1",
            mode: "validation",
            mode_name: "Validation",
            attempt: 1,
            priority: "schedule",
            instructions: "# Validation\nRun tests.",
            open_items: &items,
            memory: "# Persistent Memory\n## Commands\n- cargo test",
            earlier: &earlier,
            previous_cycle: Some(&previous),
        });
        let order = [
            "# Task",
            "Advance the plan",
            "- mode: validation (Validation)",
            "## Mode instructions",
            "Run tests.",
            "- [ ] 3. Ship it (Roadmap) — TODO.md:7",
            "### Persistent Memory",
            "- cargo test",
            "- implementation: did X",
            "- planning (cycle c0): next: Y",
            "## Output protocol",
        ];
        let mut at = 0;
        for needle in order {
            let found = text[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing or out of order in:\n{text}"));
            at += found + needle.len();
        }
    }
}
