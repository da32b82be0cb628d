//! `output = "auto"`: recognises the format from what arrives, then reads it as that format.
//!
//! The first non-empty stdout line decides: a JSON object whose `type` is a Claude event
//! (`result` with `subtype`/`is_error`, `system`, `assistant`, `user`) is claude-json; a
//! Codex event (`thread.*`, `turn.*`, `item.*`, `error` without a `timestamp`) is
//! codex-jsonl; a Gemini stream event (with a `timestamp`), a JSON object with `response`,
//! `stats` or `error`, or a line that opens a JSON document without closing it (Gemini's
//! pretty-printed output) is gemini-json; anything else is text. With nothing on stdout, a
//! JSON document on stderr means Gemini (it writes its errors there), else text. The lines
//! seen before the decision are replayed to the chosen reader.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use super::{AgentReport, LineSink, MAX_KEPT, OutputFormat, Price, Reader, Stream, strip_ansi};

#[derive(Debug)]
pub struct AutoReader {
    price: Option<Price>,
    pending: Vec<(Stream, String, bool)>,
    pending_bytes: usize,
    chosen: Option<Box<Reader>>,
}

impl AutoReader {
    pub fn new(price: Option<Price>) -> AutoReader {
        AutoReader {
            price,
            pending: Vec::new(),
            pending_bytes: 0,
            chosen: None,
        }
    }

    /// The format the first stdout line shows.
    fn recognise(line: &str) -> OutputFormat {
        let line = line.trim_start_matches('\u{feff}').trim();
        if !line.starts_with('{') {
            return OutputFormat::Text;
        }
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            // Not whole on its first line: a one-line event cut short names its kind early;
            // anything else opens a pretty-printed (Gemini) document.
            let head: String = line
                .chars()
                .filter(|c| !c.is_whitespace())
                .take(64)
                .collect();
            return if ["\"type\":\"thread.", "\"type\":\"turn.", "\"type\":\"item."]
                .iter()
                .any(|kind| head.starts_with(&format!("{{{kind}")))
            {
                OutputFormat::CodexJsonl
            } else if head.starts_with("{\"type\":\"result\",\"subtype\"")
                || head.starts_with("{\"type\":\"system\"")
                || head.starts_with("{\"type\":\"assistant\"")
            {
                OutputFormat::ClaudeJson
            } else {
                OutputFormat::GeminiJson
            };
        };
        let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
        if object.contains_key("timestamp")
            && [
                "init",
                "message",
                "tool_use",
                "tool_result",
                "error",
                "result",
            ]
            .contains(&kind)
        {
            return OutputFormat::GeminiJson;
        }
        if kind.starts_with("thread.")
            || kind.starts_with("turn.")
            || kind.starts_with("item.")
            || kind == "error"
        {
            return OutputFormat::CodexJsonl;
        }
        if ["system", "assistant", "user", "stream_event"].contains(&kind)
            || kind == "result"
                && (object.contains_key("subtype") || object.contains_key("is_error"))
        {
            return OutputFormat::ClaudeJson;
        }
        if ["response", "stats", "error"]
            .iter()
            .any(|key| object.contains_key(*key))
        {
            return OutputFormat::GeminiJson;
        }
        OutputFormat::Text
    }

    fn choose(&mut self, format: OutputFormat) -> &mut Reader {
        let mut reader = Reader::new(format, self.price);
        for (stream, line, cut) in self.pending.drain(..) {
            reader.line(stream, &line, cut);
        }
        self.pending_bytes = 0;
        self.chosen.insert(Box::new(reader))
    }

    pub(super) fn finish_in<Z: TimeZone>(
        mut self,
        exit_code: Option<i32>,
        now: DateTime<Utc>,
        zone: &Z,
    ) -> AgentReport {
        let reader = match self.chosen.take() {
            Some(reader) => *reader,
            None => {
                let gemini = self.pending.iter().any(|(stream, line, _)| {
                    *stream == Stream::Stderr && strip_ansi(line).trim_start().starts_with('{')
                });
                let format = if gemini {
                    OutputFormat::GeminiJson
                } else {
                    OutputFormat::Text
                };
                let mut reader = Reader::new(format, self.price);
                for (stream, line, cut) in self.pending.drain(..) {
                    reader.line(stream, &line, cut);
                }
                reader
            }
        };
        reader.finish_in(exit_code, now, zone)
    }
}

impl LineSink for AutoReader {
    fn line(&mut self, stream: Stream, line: &str, cut: bool) {
        if let Some(reader) = &mut self.chosen {
            reader.line(stream, line, cut);
            return;
        }
        if stream == Stream::Stdout && !line.trim().is_empty() {
            let format = Self::recognise(&strip_ansi(line));
            self.choose(format).line(stream, line, cut);
            return;
        }
        // Before the decision only stderr (and blank stdout lines) arrive; keep them within
        // the reader's bound.
        if self.pending_bytes + line.len() <= MAX_KEPT {
            self.pending_bytes += line.len();
            self.pending.push((stream, line.to_string(), cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::agent::test_support::{failed, limited, read};
    use crate::agent::{OutputFormat, Verdict};

    fn auto(agent: &str, case: &str, exit: i32) -> crate::agent::AgentReport {
        read(OutputFormat::Auto, agent, case, Some(exit), None)
    }

    #[test]
    fn recognises_each_format() {
        assert_eq!(
            AutoReaderFormat::of("{\"type\":\"result\",\"subtype\":\"success\"}"),
            OutputFormat::ClaudeJson
        );
        assert_eq!(
            AutoReaderFormat::of("{\"type\":\"thread.started\",\"thread_id\":\"x\"}"),
            OutputFormat::CodexJsonl
        );
        assert_eq!(
            AutoReaderFormat::of("{\"type\":\"error\",\"message\":\"x\"}"),
            OutputFormat::CodexJsonl
        );
        assert_eq!(
            AutoReaderFormat::of(
                "{\"type\":\"init\",\"timestamp\":\"t\",\"session_id\":\"s\",\"model\":\"m\"}"
            ),
            OutputFormat::GeminiJson
        );
        assert_eq!(AutoReaderFormat::of("{"), OutputFormat::GeminiJson);
        assert_eq!(
            AutoReaderFormat::of("{\"type\":\"result\",\"subtype\":\"succ"),
            OutputFormat::ClaudeJson
        );
        assert_eq!(
            AutoReaderFormat::of("{\"type\":\"item.completed\",\"item\":{"),
            OutputFormat::CodexJsonl
        );
        assert_eq!(
            AutoReaderFormat::of("{\"response\":\"hi\"}"),
            OutputFormat::GeminiJson
        );
        assert_eq!(AutoReaderFormat::of("Aider v0.86.2"), OutputFormat::Text);
        assert_eq!(AutoReaderFormat::of("{\"other\":1}"), OutputFormat::Text);
    }

    struct AutoReaderFormat;
    impl AutoReaderFormat {
        fn of(line: &str) -> OutputFormat {
            super::AutoReader::recognise(line)
        }
    }

    #[test]
    fn reads_every_fixture_as_its_own_format_does() {
        for (agent, case, exit, format) in [
            ("claude", "success", 0, OutputFormat::ClaudeJson),
            ("claude", "not-logged-in", 1, OutputFormat::ClaudeJson),
            ("claude", "session-limit", 1, OutputFormat::ClaudeJson),
            ("claude", "stream-success", 0, OutputFormat::ClaudeJson),
            ("claude", "truncated", 0, OutputFormat::ClaudeJson),
            ("codex", "success", 0, OutputFormat::CodexJsonl),
            ("codex", "usage-limit", 1, OutputFormat::CodexJsonl),
            ("codex", "no-network", 124, OutputFormat::CodexJsonl),
            ("codex", "retry-then-success", 0, OutputFormat::CodexJsonl),
            ("gemini", "success", 0, OutputFormat::GeminiJson),
            ("gemini", "quota", 173, OutputFormat::GeminiJson),
            ("gemini", "fetch-failed", 1, OutputFormat::GeminiJson),
            ("gemini", "invalid-stream", 0, OutputFormat::GeminiJson),
            ("gemini", "truncated", 0, OutputFormat::GeminiJson),
            ("gemini", "stream-fetch-failed", 1, OutputFormat::GeminiJson),
            ("aider", "success", 0, OutputFormat::Text),
            ("aider", "rate-limit", 0, OutputFormat::Text),
        ] {
            let by_auto = auto(agent, case, exit);
            let by_format = read(format, agent, case, Some(exit), None);
            assert_eq!(by_auto, by_format, "{agent}/{case}");
        }
    }

    #[test]
    fn known_traps() {
        assert_eq!(
            failed(&auto("claude", "not-logged-in", 0)),
            "Not logged in · Please run /login"
        );
        assert!(limited(&auto("gemini", "quota", 173)).0.is_some());
        assert_eq!(auto("codex", "retry-then-success", 0).verdict, Verdict::Ok);
    }
}
