//! The entries of one section of persistent-memory.md, with their lines (`memory_show
//! {section}` over MCP; `memory show` prints the whole file).

use crate::exit::Error;
use crate::instance::Instance;
use crate::memory::{MemoryDoc, Section};

#[derive(Debug, Clone, serde::Serialize)]
pub struct SectionEntries {
    pub section: String,
    pub entries: Vec<EntryView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EntryView {
    pub text: String,
    /// 1-based line of the entry's list marker.
    pub line: usize,
}

/// The section's entries, oldest first (an absent file or section has none).
pub fn section(inst: &Instance, section: Section) -> Result<SectionEntries, Error> {
    let shown = super::memory::show(inst)?;
    let doc = MemoryDoc::parse(&shown.text);
    Ok(SectionEntries {
        section: section.title().to_string(),
        entries: doc
            .all_entries()
            .iter()
            .filter(|e| e.section == section)
            .map(|e| EntryView {
                text: e.text.clone(),
                line: e.line,
            })
            .collect(),
    })
}
