//! The three sections that hold entries: their canonical order, their titles (matched
//! loosely when read) and the order a prune empties them in.

use std::fmt;
use std::str::FromStr;

use super::MemoryError;

/// One of the three sections that hold entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    ImplementationPatterns,
    Commands,
    SystemUpdates,
}

impl Section {
    /// Canonical file order.
    pub const ALL: [Section; 3] = [
        Section::ImplementationPatterns,
        Section::Commands,
        Section::SystemUpdates,
    ];

    /// The order in which entries are pruned: status noise first, hard-won patterns last.
    pub(super) const PRUNE_ORDER: [Section; 3] = [
        Section::SystemUpdates,
        Section::Commands,
        Section::ImplementationPatterns,
    ];

    /// The position in [`Section::ALL`].
    pub(super) fn index(self) -> usize {
        match self {
            Section::ImplementationPatterns => 0,
            Section::Commands => 1,
            Section::SystemUpdates => 2,
        }
    }

    /// The heading text, e.g. `"Implementation Patterns"`.
    pub fn title(self) -> &'static str {
        match self {
            Section::ImplementationPatterns => "Implementation Patterns",
            Section::Commands => "Commands",
            Section::SystemUpdates => "System Updates",
        }
    }

    /// The section a heading text names, ignoring case, `-`/`_` and extra spaces.
    pub(super) fn from_title(text: &str) -> Option<Section> {
        let wanted: String = text
            .replace(['-', '_'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        Section::ALL
            .into_iter()
            .find(|s| s.title().to_lowercase() == wanted)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

impl FromStr for Section {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Section::from_title(s).ok_or_else(|| MemoryError::UnknownSection {
            name: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names_parse_loosely() {
        for (name, section) in [
            ("System Updates", Section::SystemUpdates),
            ("system_updates", Section::SystemUpdates),
            ("implementation-patterns", Section::ImplementationPatterns),
            ("COMMANDS", Section::Commands),
        ] {
            assert_eq!(name.parse::<Section>().unwrap(), section);
        }
        let error = "Notes".parse::<Section>().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown memory section \"Notes\"")
        );
    }
}
