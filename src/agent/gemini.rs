//! Gemini CLI's `--output-format json`: one document, pretty-printed over many lines
//! (`JSON.stringify(output, null, 2)` in packages/core/src/output/json-formatter.ts):
//! `{"session_id", "response", "stats": {"models": {<name>: {"tokens": {"prompt",
//! "candidates", "cached", "thoughts", ...}}}}, "error": {"type", "message", "code"}}`.
//! Also its `stream-json` events (`init`, `message`, `tool_use`, `tool_result`, `error`,
//! `result` with `status` and `stats`), one per line.
//!
//! Rules:
//! - On success the document is on stdout. On an error gemini writes the document with an
//!   `error` object to stderr, among log lines and stack traces, and exits with a status of
//!   its own (41 no auth, 55 untrusted folder, 1 otherwise; a quota error's `code` 429 makes
//!   it `process.exit(429)`, seen as 173). Both streams are read for documents.
//! - An `error` object is a failure even on exit 0 (`INVALID_STREAM` arrives that way), and
//!   a limit when its code is 429/503 or its type is a quota error.
//! - Tokens are summed over the models: in = `prompt` (it includes `cached`), out =
//!   `candidates + thoughts`, cached = `cached`.
//! - A document is collected from a line that starts with `{` until its braces balance; a
//!   line that is exactly `{` starts a new one (a pretty-printed document indents every
//!   nested line, so such a line can only open a document).

use serde_json::Value;

use super::{LineSink, MAX_KEPT, Price, Raw, Seen, Stream, Tokens, count, keep, limit};

const FORMAT: &str = "gemini-json";

/// Collects one JSON document over lines by tracking brace depth outside strings. Written
/// here because serde_json reads a document only once it is whole, and re-reading the
/// growing text at every line would cost the square of its length.
#[derive(Debug, Default)]
struct Collector {
    text: String,
    depth: usize,
    in_string: bool,
    escaped: bool,
    open: bool,
}

impl Collector {
    /// Feeds a line; returns a whole document's text once its braces balance.
    fn feed(&mut self, line: &str) -> Option<String> {
        if !self.open {
            if !line.trim_start().starts_with('{') {
                return None;
            }
            *self = Collector {
                open: true,
                ..Collector::default()
            };
        } else if line.trim_end() == "{" {
            *self = Collector {
                open: true,
                ..Collector::default()
            };
        }
        if !keep(&mut self.text, line) || !keep(&mut self.text, "\n") {
            // Past the cap: what was kept is read as it is (and found short).
            self.open = false;
            return Some(std::mem::take(&mut self.text));
        }
        for c in line.chars() {
            if self.in_string {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, '\\') => self.escaped = true,
                    (false, '"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.open = false;
                        return Some(std::mem::take(&mut self.text));
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[derive(Debug)]
pub struct GeminiReader {
    price: Option<Price>,
    stdout: Collector,
    stderr: Collector,
    answer: String,
    /// The error object's message, code and type.
    error: Option<(String, Option<u16>)>,
    success: bool,
    tokens: Option<Tokens>,
    bad: Option<String>,
    said: bool,
    seen: Seen,
}

impl GeminiReader {
    pub fn new(price: Option<Price>) -> GeminiReader {
        GeminiReader {
            price,
            stdout: Collector::default(),
            stderr: Collector::default(),
            answer: String::new(),
            error: None,
            success: false,
            tokens: None,
            bad: None,
            said: false,
            seen: Seen::default(),
        }
    }

    fn document(&mut self, text: &str, cut: bool) {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(err) => {
                self.bad = Some(super::unreadable(FORMAT, &err, text.len(), cut));
                return;
            }
        };
        self.bad = None;
        match value.get("type").and_then(Value::as_str) {
            Some(kind) if value.get("timestamp").is_some() => self.event(kind, &value),
            _ => self.output(&value),
        }
    }

    /// The `--output-format json` document.
    fn output(&mut self, value: &Value) {
        if let Some(error) = value.get("error").filter(|e| e.is_object()) {
            self.error = Some(error_of(error));
        }
        if let Some(response) = value.get("response").and_then(Value::as_str) {
            self.success = true;
            self.answer.clear();
            keep(&mut self.answer, response);
        }
        if let Some(models) = value.pointer("/stats/models").and_then(Value::as_object) {
            let mut tokens = Tokens::default();
            for model in models.values() {
                let t = model.get("tokens").unwrap_or(&Value::Null);
                tokens.add(Tokens {
                    input: count(t, "prompt"),
                    output: count(t, "candidates").saturating_add(count(t, "thoughts")),
                    cached: count(t, "cached"),
                });
            }
            self.tokens = Some(tokens);
        }
    }

    /// One `--output-format stream-json` event.
    fn event(&mut self, kind: &str, value: &Value) {
        match kind {
            "message" if value.get("role").and_then(Value::as_str) == Some("assistant") => {
                if let Some(content) = value.get("content").and_then(Value::as_str) {
                    keep(&mut self.answer, content);
                }
            }
            "result" => {
                if value.get("status").and_then(Value::as_str) == Some("error") {
                    let error = value.get("error").unwrap_or(&Value::Null);
                    self.error = Some(error_of(error));
                } else {
                    self.success = true;
                }
                if let Some(stats) = value.get("stats") {
                    self.tokens = Some(Tokens {
                        input: count(stats, "input_tokens"),
                        output: count(stats, "output_tokens"),
                        cached: count(stats, "cached"),
                    });
                }
            }
            _ => {}
        }
    }

    pub(super) fn into_raw(mut self) -> (Raw, Option<Price>) {
        for collector in [&mut self.stdout, &mut self.stderr] {
            if collector.open && self.bad.is_none() && self.error.is_none() && !self.success {
                self.bad = Some(format!(
                    "could not read the {FORMAT} output: the document ends after {} bytes, unclosed",
                    collector.text.len()
                ));
            }
        }
        let mut raw = Raw {
            tokens: self.tokens,
            seen: self.seen,
            ..Raw::default()
        };
        if let Some(error) = self.error {
            raw.error = Some(error);
        } else if self.success {
            raw.answer = self.answer;
        } else {
            raw.unreadable = self
                .bad
                .or_else(|| self.said.then(|| format!("no {FORMAT} document on stdout")));
        }
        (raw, self.price)
    }
}

fn error_of(error: &Value) -> (String, Option<u16>) {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("gemini reported an error")
        .to_string();
    let kind = error.get("type").and_then(Value::as_str).unwrap_or("");
    let code = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    // Gemini's own quota errors (TerminalQuotaError, RetryableQuotaError) are limits even
    // when their message names none.
    let code = if kind.contains("QuotaError") && code.is_none_or(|c| c != 503) {
        Some(429)
    } else {
        code
    };
    let message =
        if limit::is_limit_error(code, &message) || ["", "Error", "unknown"].contains(&kind) {
            message
        } else {
            format!("{kind}: {message}")
        };
    (message, code)
}

impl LineSink for GeminiReader {
    fn line(&mut self, stream: Stream, line: &str, cut: bool) {
        let line = super::strip_ansi(line);
        let collector = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let was_open = collector.open;
        let document = collector.feed(&line);
        let in_document = was_open || collector.open;
        if let Some(document) = document {
            self.said |= stream == Stream::Stdout;
            let cut = cut || document.len() >= MAX_KEPT;
            self.document(&document, cut);
            return;
        }
        if in_document {
            self.said |= stream == Stream::Stdout;
            return;
        }
        if stream == Stream::Stdout && !line.trim().is_empty() {
            self.said = true;
        }
        self.seen.push(&line);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use crate::agent::test_support::{failed, limited, now, read};
    use crate::agent::{AgentReport, LineSink, OutputFormat, Reader, Stream, Tokens, Verdict};

    fn gemini(case: &str, exit: i32) -> AgentReport {
        read(OutputFormat::GeminiJson, "gemini", case, Some(exit), None)
    }

    #[test]
    fn success_spans_lines_and_sums_model_tokens() {
        let r = gemini("success", 0);
        assert_eq!(r.verdict, Verdict::Ok);
        assert!(
            r.answer
                .ends_with("HANDOFF: heap bound check added; validation should run the heap tests")
        );
        assert_eq!(
            r.tokens,
            Some(Tokens {
                input: 5_000,
                output: 1_000,
                cached: 3_000
            })
        );
        assert_eq!(r.note, "tokens in/out/cached 5000/1000/3000");
    }

    #[test]
    fn captured_errors_on_stderr_with_their_own_exit() {
        let r = gemini("no-auth", 41);
        assert!(
            failed(&r)
                .starts_with("Please set an Auth method in your /home/user/.gemini/settings.json"),
            "{r:?}"
        );
        let r = gemini("fetch-failed", 1);
        assert_eq!(
            failed(&r),
            "exception TypeError: fetch failed sending request"
        );
        let r = gemini("untrusted", 55);
        assert!(
            failed(&r)
                .starts_with("exit status 55: Gemini CLI is not running in a trusted directory."),
            "{r:?}"
        );
    }

    #[test]
    fn quota_error_is_a_limit_with_its_reset() {
        let (until, message) = limited(&gemini("quota", 173));
        assert_eq!(
            until,
            Some(now() + Duration::seconds(2 * 3600 + 36 * 60 + 24))
        );
        assert!(message.starts_with("You have exhausted your capacity"));
        let (until, message) = limited(&gemini("resource-exhausted", 173));
        assert_eq!(until, None);
        assert!(message.contains("RESOURCE_EXHAUSTED"), "{message}");
    }

    #[test]
    fn error_object_fails_an_exit_0() {
        let r = gemini("invalid-stream", 0);
        assert_eq!(
            failed(&r),
            "INVALID_STREAM: Model stream ended with an invalid chunk or missing finish reason."
        );
        assert_eq!(r.tokens.unwrap().output, 1_000);
    }

    #[test]
    fn truncated_document() {
        let r = gemini("truncated", 0);
        assert!(
            failed(&r)
                .starts_with("could not read the gemini-json output: the document ends after"),
            "{r:?}"
        );
    }

    #[test]
    fn stream_json_result_event() {
        let r = read(
            OutputFormat::GeminiJson,
            "gemini",
            "stream-fetch-failed",
            Some(1),
            None,
        );
        assert_eq!(
            failed(&r),
            "[API Error: exception TypeError: fetch failed sending request]"
        );
        assert_eq!(r.tokens, Some(Tokens::default()));
    }

    #[test]
    fn a_bare_brace_line_restarts_the_document() {
        let mut reader = Reader::new(OutputFormat::GeminiJson, None);
        for line in ["{ not json", "{", "  \"response\": \"hi\"", "}"] {
            reader.line(Stream::Stdout, line, false);
        }
        let r = reader.finish(Some(0), now());
        assert_eq!(r.verdict, Verdict::Ok);
        assert_eq!(r.answer, "hi");
    }

    #[test]
    fn a_long_response_is_read_whole() {
        let text = "y".repeat(300 * 1024);
        let doc = serde_json::to_string_pretty(&serde_json::json!({"response": text})).unwrap();
        let mut reader = Reader::new(OutputFormat::GeminiJson, None);
        for line in doc.lines() {
            reader.line(Stream::Stdout, line, false);
        }
        assert_eq!(reader.finish(Some(0), now()).answer, text);
    }
}
