//! What a mode says on its output, read line by line as the run's line sinks
//! ([`LineSink`]): the output protocol (SPEC §3) and an agent CLI's JSON result (SPEC §8).
//!
//! [`ProtocolReader`] reads `MEMORY <Section>: text`, `HANDOFF: text` and `BLOCKED: reason`.
//! Rules:
//!
//! - Protocol lines come from stdout only. The prefix starts the line, after optional
//!   whitespace; a line longer than [`MAX_PROTOCOL_LINE`] is never a protocol line.
//! - At most [`MAX_MEMORY_ENTRIES`] `MEMORY` and [`MAX_HANDOFF_LINES`] `HANDOFF` lines are
//!   kept a run; further ones are counted and named in the run's summary.
//! - The first `BLOCKED` line wins, and makes the run `blocked`.
//! - An agent CLI asked for JSON prints its answer inside one result line (see
//!   [`AgentResultReader`]): the answer's lines are read as if printed one by one, at the
//!   place of the result line. Such a line is read whole up to the log cap.
//!
//! [`AgentResultReader`] takes the run's cost from the same result line.

use crate::runner::{LOG_CAP, LineSink, Stream};

/// Longer stdout lines are never protocol lines.
pub const MAX_PROTOCOL_LINE: usize = 64 * 1024;
/// `MEMORY` lines kept per run; further ones are dropped and counted.
pub const MAX_MEMORY_ENTRIES: usize = 200;
/// `HANDOFF` lines kept per run; further ones are dropped and counted.
pub const MAX_HANDOFF_LINES: usize = 50;
/// An agent's result line holds its whole answer: it is read whole as far as a log could
/// hold it.
const RESULT_LINE_LIMIT: usize = LOG_CAP as usize;

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
}

impl LineSink for ProtocolReader {
    fn line(&mut self, stream: Stream, line: &str, cut: bool) {
        if stream != Stream::Stdout || cut {
            return;
        }
        if let Some(result) = agent_result(line) {
            for line in result.text.lines() {
                self.read_line(line);
            }
        } else if line.len() <= MAX_PROTOCOL_LINE {
            self.read_line(line);
        }
    }

    fn line_limit(&self, stream: Stream) -> usize {
        match stream {
            Stream::Stdout => RESULT_LINE_LIMIT,
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

/// The cost an agent CLI reported in its JSON result line(s); the last one that gives a
/// cost wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentResultReader {
    pub cost_usd: Option<f64>,
}

impl LineSink for AgentResultReader {
    fn line(&mut self, stream: Stream, line: &str, cut: bool) {
        if stream != Stream::Stdout || cut {
            return;
        }
        if let Some(cost) = agent_result(line).and_then(|r| r.cost_usd) {
            self.cost_usd = Some(cost);
        }
    }

    fn line_limit(&self, stream: Stream) -> usize {
        match stream {
            Stream::Stdout => RESULT_LINE_LIMIT,
            Stream::Stderr => 0,
        }
    }
}

/// The final line of a headless agent CLI asked for JSON output: `claude -p
/// --output-format json` prints one object, `--output-format stream-json` ends with one:
/// `{"type":"result", "result": "<the answer>", "total_cost_usd": 0.0123, ...}` (older
/// versions: `cost_usd`).
#[derive(Debug, PartialEq)]
struct AgentResult {
    text: String,
    cost_usd: Option<f64>,
}

/// Reads a stdout line as an agent CLI's JSON result, if it is one.
fn agent_result(line: &str) -> Option<AgentResult> {
    let line = line.trim();
    if !line.starts_with('{') || !line.contains("\"result\"") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("type")?.as_str()? != "result" {
        return None;
    }
    let cost_usd = ["total_cost_usd", "cost_usd"]
        .iter()
        .find_map(|key| value.get(*key)?.as_f64())
        .filter(|cost| cost.is_finite() && *cost >= 0.0);
    let text = value
        .get("result")
        .and_then(|r| r.as_str())
        .unwrap_or_default()
        .to_owned();
    Some(AgentResult { text, cost_usd })
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

    /// Feeds `line` to both readers as an uncut stdout line.
    fn read(line: &str) -> (ProtocolReader, AgentResultReader) {
        let mut protocol = ProtocolReader::default();
        let mut result = AgentResultReader::default();
        protocol.line(Stream::Stdout, line, false);
        result.line(Stream::Stdout, line, false);
        (protocol, result)
    }

    #[test]
    fn an_agent_json_result_gives_the_cost_and_its_answer_carries_the_protocol() {
        let line = r#"{"type":"result","subtype":"success","is_error":false,"result":"Done.\nMEMORY Commands: cargo test -q\nHANDOFF: next: docs","total_cost_usd":0.0421,"num_turns":3}"#;
        let (protocol, result) = read(line);
        assert_eq!(result.cost_usd, Some(0.0421));
        assert_eq!(
            protocol.memory,
            vec![("Commands".to_string(), "cargo test -q".to_string())]
        );
        assert_eq!(protocol.handoff, vec!["next: docs".to_string()]);

        let older = r#"{"type":"result","result":"BLOCKED: no credentials","cost_usd":0.5}"#;
        let (protocol, result) = read(older);
        assert_eq!(result.cost_usd, Some(0.5));
        assert_eq!(protocol.blocked.as_deref(), Some("no credentials"));
        assert_eq!(LineSink::blocked(&protocol), Some("no credentials"));

        // Other JSON lines, a result that is not one, a negative or missing cost: no cost.
        for line in [
            r#"{"type":"assistant","message":{"content":"MEMORY Commands: x"}}"#,
            r#"{"type":"result","result":"ok","total_cost_usd":-1}"#,
            r#"{"type":"result","result":"ok"}"#,
            r#"{"type": "result", "result": "#,
        ] {
            let (protocol, result) = read(line);
            assert_eq!(result.cost_usd, None, "{line}");
            assert!(protocol.memory.is_empty(), "{line}");
        }
        // A cut line is not read at all.
        let mut protocol = ProtocolReader::default();
        let mut result = AgentResultReader::default();
        protocol.line(Stream::Stdout, line, true);
        result.line(Stream::Stdout, line, true);
        assert_eq!(result.cost_usd, None);
        assert_eq!(protocol, ProtocolReader::default());
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

    #[tokio::test]
    async fn an_agent_result_line_far_over_64_kib_is_read_whole_in_its_place() {
        // A 1 MiB answer on one JSON line, between two plain protocol lines.
        let script = r#"
            echo "HANDOFF: before"
            printf '{"type":"result","result":"'
            head -c 1048576 /dev/zero | tr '\0' a
            printf '\\nMEMORY Commands: make check\\nHANDOFF: inside","total_cost_usd":1.5}\n'
            echo "HANDOFF: after"
        "#;
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), &["/bin/sh", "-c", script]);
        let mut protocol = ProtocolReader::default();
        let mut result = AgentResultReader::default();
        let outcome = run_with(
            s,
            &mut [&mut protocol, &mut result],
            CancellationToken::new(),
        )
        .await;

        assert_eq!(outcome.status, RunStatus::Ok, "{outcome:?}");
        assert_eq!(result.cost_usd, Some(1.5));
        assert_eq!(protocol.handoff, ["before", "inside", "after"]);
        assert_eq!(
            protocol.memory,
            [("Commands".to_owned(), "make check".to_owned())]
        );
    }
}
