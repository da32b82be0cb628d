//! What a mode says on its output: the output protocol (SPEC §3), read line by line as one
//! of the run's line sinks ([`LineSink`]).
//!
//! [`ProtocolReader`] reads `MEMORY <Section>: text`, `HANDOFF: text` and `BLOCKED: reason`.
//! Rules:
//!
//! - Protocol lines come from stdout only. The prefix starts the line, after optional
//!   whitespace; a line longer than [`MAX_PROTOCOL_LINE`] is never a protocol line.
//! - At most [`MAX_MEMORY_ENTRIES`] `MEMORY` and [`MAX_HANDOFF_LINES`] `HANDOFF` lines are
//!   kept a run; further ones are counted and named in the run's summary.
//! - The first `BLOCKED` line wins, and makes the run `blocked`.
//! - An agent asked for JSON prints its answer inside its JSON ([`crate::agent`] reads it):
//!   the caller hands that answer over with [`ProtocolReader::read_text`], and its lines count
//!   as if printed one by one.

use crate::runner::{LineSink, Stream};

/// Longer stdout lines are never protocol lines.
pub const MAX_PROTOCOL_LINE: usize = 64 * 1024;
/// `MEMORY` lines kept per run; further ones are dropped and counted.
pub const MAX_MEMORY_ENTRIES: usize = 200;
/// `HANDOFF` lines kept per run; further ones are dropped and counted.
pub const MAX_HANDOFF_LINES: usize = 50;

/// The output protocol of one run, as read so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProtocolReader {
    /// (section as written, text) from `MEMORY <Section>: text`, at most
    /// [`MAX_MEMORY_ENTRIES`].
    pub memory: Vec<(String, String)>,
    /// Texts of `HANDOFF: text` lines in order, at most [`MAX_HANDOFF_LINES`].
    pub handoff: Vec<String>,
    /// Reason of the first `BLOCKED: reason` line (possibly empty).
    pub blocked: Option<String>,
    /// `MEMORY` lines over the limit.
    pub dropped_memory: usize,
    /// `HANDOFF` lines over the limit.
    pub dropped_handoff: usize,
}

impl ProtocolReader {
    /// Reads one line of text (no line ending) as the child printed it.
    pub fn read_line(&mut self, line: &str) {
        match parse_protocol(line) {
            Some(Protocol::Memory { section, text }) => {
                if self.memory.len() < MAX_MEMORY_ENTRIES {
                    self.memory.push((section.to_owned(), text.to_owned()));
                } else {
                    self.dropped_memory += 1;
                }
            }
            Some(Protocol::Handoff(text)) => {
                if self.handoff.len() < MAX_HANDOFF_LINES {
                    self.handoff.push(text.to_owned());
                } else {
                    self.dropped_handoff += 1;
                }
            }
            Some(Protocol::Blocked(reason)) => {
                self.blocked.get_or_insert_with(|| reason.to_owned());
            }
            None => {}
        }
    }

    /// Reads the lines of an agent's answer, as if the agent had printed them on stdout.
    pub fn read_text(&mut self, text: &str) {
        for line in text.lines() {
            if line.len() <= MAX_PROTOCOL_LINE {
                self.read_line(line);
            }
        }
    }
}

impl LineSink for ProtocolReader {
    fn line(&mut self, stream: Stream, line: &str, cut: bool) {
        if stream != Stream::Stdout || cut || line.len() > MAX_PROTOCOL_LINE {
            return;
        }
        self.read_line(line);
    }

    fn line_limit(&self, stream: Stream) -> usize {
        match stream {
            Stream::Stdout => MAX_PROTOCOL_LINE,
            Stream::Stderr => 0,
        }
    }

    fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.dropped_memory > 0 {
            notes.push(format!(
                "{} MEMORY lines over the limit of {MAX_MEMORY_ENTRIES} dropped",
                self.dropped_memory
            ));
        }
        if self.dropped_handoff > 0 {
            notes.push(format!(
                "{} HANDOFF lines over the limit of {MAX_HANDOFF_LINES} dropped",
                self.dropped_handoff
            ));
        }
        notes
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Protocol<'a> {
    Memory { section: &'a str, text: &'a str },
    Handoff(&'a str),
    Blocked(&'a str),
}

/// Reads one stdout line as a protocol line: the prefix after optional leading whitespace.
fn parse_protocol(line: &str) -> Option<Protocol<'_>> {
    let line = line.trim_start();
    if let Some(rest) = line.strip_prefix("HANDOFF:") {
        let text = rest.trim();
        return (!text.is_empty()).then_some(Protocol::Handoff(text));
    }
    if let Some(rest) = line.strip_prefix("BLOCKED:") {
        return Some(Protocol::Blocked(rest.trim()));
    }
    let rest = line.strip_prefix("MEMORY ")?;
    let (section, text) = rest.split_once(':')?;
    let (section, text) = (section.trim(), text.trim());
    (!section.is_empty() && !text.is_empty()).then_some(Protocol::Memory { section, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RunStatus;
    use crate::runner::testing::{fixture, run_with, spec};
    use tokio_util::sync::CancellationToken;

    #[test]
    fn protocol_lines_need_the_prefix_at_line_start() {
        assert_eq!(
            parse_protocol("  MEMORY Commands:  cargo fmt "),
            Some(Protocol::Memory {
                section: "Commands",
                text: "cargo fmt"
            })
        );
        assert_eq!(
            parse_protocol("\tHANDOFF: next"),
            Some(Protocol::Handoff("next"))
        );
        assert_eq!(parse_protocol("BLOCKED:"), Some(Protocol::Blocked("")));
        assert_eq!(parse_protocol("note: HANDOFF: x"), None);
        assert_eq!(parse_protocol("MEMORY Commands"), None);
        assert_eq!(parse_protocol("MEMORY : text"), None);
        assert_eq!(parse_protocol("HANDOFF:   "), None);
        assert_eq!(parse_protocol("handoff: lower case"), None);
    }

    #[test]
    fn protocol_lines_come_from_stdout_whole_and_short() {
        let mut reader = ProtocolReader::default();
        reader.line(Stream::Stderr, "HANDOFF: from stderr", false);
        reader.line(Stream::Stdout, "HANDOFF: cut", true);
        let long = format!("HANDOFF: {}", "y".repeat(MAX_PROTOCOL_LINE));
        reader.line(Stream::Stdout, &long, false);
        reader.line(Stream::Stdout, "HANDOFF: kept", false);
        assert_eq!(reader.handoff, ["kept"]);
        assert_eq!(reader.notes(), Vec::<String>::new());
        assert_eq!(LineSink::blocked(&reader), None);
    }

    #[test]
    fn an_answer_is_read_line_by_line() {
        let mut reader = ProtocolReader::default();
        reader.read_text(
            "Done.\nMEMORY Commands: cargo test -q\nHANDOFF: next: docs\nBLOCKED: no credentials",
        );
        assert_eq!(
            reader.memory,
            vec![("Commands".to_string(), "cargo test -q".to_string())]
        );
        assert_eq!(reader.handoff, ["next: docs"]);
        assert_eq!(LineSink::blocked(&reader), Some("no credentials"));
    }

    #[tokio::test]
    async fn protocol_lines_are_parsed_even_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), &[&fixture("protocol.sh")]);
        s.env = vec![("FLOOD_BYTES".into(), (1024 * 1024).to_string())];
        s.log_cap = 64 * 1024;
        let log_path = s.log_path.clone();
        let mut protocol = ProtocolReader::default();
        let outcome = run_with(s, &mut [&mut protocol], CancellationToken::new()).await;

        assert!(outcome.truncated);
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            !log.contains("after the cap"),
            "the line should be past the cap"
        );

        assert_eq!(protocol.memory.len(), MAX_MEMORY_ENTRIES);
        assert_eq!(
            protocol.memory[0],
            ("Commands".to_owned(), "cargo test --quiet".to_owned())
        );
        assert_eq!(
            protocol.memory[1],
            (
                "Implementation Patterns".to_owned(),
                "signal the whole group with killpg".to_owned()
            )
        );
        assert_eq!(
            protocol.memory[2],
            ("System Updates".to_owned(), "entry 1".to_owned())
        );
        assert_eq!(protocol.memory[199].1, "entry 198");

        assert_eq!(protocol.handoff.len(), MAX_HANDOFF_LINES);
        assert_eq!(
            &protocol.handoff[..4],
            ["first note", "crlf line", "after the cap", "note 1"]
        );
        assert!(
            protocol
                .handoff
                .iter()
                .all(|h| h != "nope" && h != "from stderr")
        );
        assert!(
            !protocol.handoff.iter().any(|h| h.starts_with("yyy")),
            "overlong line parsed"
        );

        assert_eq!(
            protocol.blocked.as_deref(),
            Some("need credentials for the registry")
        );
        assert_eq!(outcome.status, RunStatus::Blocked);
        assert_eq!(
            outcome.summary,
            "blocked: need credentials for the registry; \
             12 MEMORY lines over the limit of 200 dropped; \
             13 HANDOFF lines over the limit of 50 dropped; \
             output truncated at 65536 bytes"
        );
    }

    #[tokio::test]
    async fn blocked_with_exit_zero_is_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), &[&fixture("protocol.sh")]);
        s.env = vec![("PROTOCOL".into(), "blocked-only".into())];
        let mut protocol = ProtocolReader::default();
        let outcome = run_with(s, &mut [&mut protocol], CancellationToken::new()).await;

        assert_eq!(outcome.exit_code, Some(0));
        assert_eq!(outcome.status, RunStatus::Blocked);
        assert_eq!(
            outcome.summary,
            "blocked: waiting for a human review of the schema change"
        );
        assert_eq!(protocol.handoff, ["unterminated last line"]);

        // Without the reader the same output is only a process that exited 0.
        let mut s = spec(dir.path(), &[&fixture("protocol.sh")]);
        s.env = vec![("PROTOCOL".into(), "blocked-only".into())];
        let outcome = run_with(s, &mut [], CancellationToken::new()).await;
        assert_eq!(outcome.status, RunStatus::Ok);
        assert_eq!(outcome.summary, "exit 0");
    }
}
