//! Claude Code's `--output-format json` (one result object) and `stream-json` (one event per
//! line, ending with the same result object).
//!
//! The result object (claude-code 2.1.197, as captured in tests/fixtures/agents/claude):
//! `{"type":"result","subtype":"success","is_error":false,"api_error_status":null,
//! "result":"...","total_cost_usd":0.0123,"usage":{"input_tokens":..,
//! "cache_creation_input_tokens":..,"cache_read_input_tokens":..,"output_tokens":..},...}`.
//! Rules:
//! - `is_error: true` is a failure whatever `subtype` says: API errors, a missing login and
//!   usage limits all arrive as `"subtype":"success","is_error":true` with the message in
//!   `result`; `error_*` subtypes carry their messages in `errors[]`.
//! - `api_error_status` is the HTTP status of an API error (429, 529 for limits).
//! - Tokens in = `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`,
//!   cached = `cache_read_input_tokens`; the cost is `total_cost_usd`.
//! - In stream-json the assistant's text blocks stand in for the answer when no result
//!   object arrives.

use serde_json::Value;

use super::{LineSink, Price, Raw, Seen, Stream, Tokens, count, keep, unreadable};

const FORMAT: &str = "claude-json";

#[derive(Debug)]
pub struct ClaudeReader {
    price: Option<Price>,
    result: Option<Value>,
    /// Text of stream-json assistant messages, in order.
    streamed: String,
    /// Why the last JSON line could not be read, while no result has been.
    bad: Option<String>,
    /// Whether stdout carried anything.
    said: bool,
    seen: Seen,
}

impl ClaudeReader {
    pub fn new(price: Option<Price>) -> ClaudeReader {
        ClaudeReader {
            price,
            result: None,
            streamed: String::new(),
            bad: None,
            said: false,
            seen: Seen::default(),
        }
    }

    fn event(&mut self, value: Value) {
        match value.get("type").and_then(Value::as_str) {
            Some("result") => self.result = Some(value),
            Some("assistant") => {
                let blocks = value
                    .pointer("/message/content")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for block in blocks {
                    if block.get("type").and_then(Value::as_str) == Some("text")
                        && let Some(text) = block.get("text").and_then(Value::as_str)
                    {
                        if !self.streamed.is_empty() {
                            keep(&mut self.streamed, "\n");
                        }
                        keep(&mut self.streamed, text);
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn into_raw(self) -> (Raw, Option<Price>) {
        let mut raw = Raw {
            seen: self.seen,
            ..Raw::default()
        };
        match self.result {
            Some(result) => read_result(&result, &mut raw),
            None if !self.streamed.is_empty() => raw.answer = self.streamed,
            None => {
                raw.unreadable = self.bad.or_else(|| {
                    self.said
                        .then(|| format!("no {FORMAT} result object on stdout"))
                });
            }
        }
        (raw, self.price)
    }
}

fn read_result(result: &Value, raw: &mut Raw) {
    let text = result.get("result").and_then(Value::as_str).unwrap_or("");
    let subtype = result.get("subtype").and_then(Value::as_str).unwrap_or("");
    let is_error = result.get("is_error").and_then(Value::as_bool) == Some(true)
        || subtype.starts_with("error");
    if is_error {
        let errors: Vec<&str> = result
            .get("errors")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let message = if !text.trim().is_empty() {
            text.to_string()
        } else if !errors.is_empty() {
            errors.join("; ")
        } else {
            format!("claude reported an error ({})", subtype_or(subtype))
        };
        let status = result
            .get("api_error_status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        raw.error = Some((message, status));
    } else {
        raw.answer = text.to_string();
    }
    if let Some(usage) = result.get("usage").filter(|u| u.is_object()) {
        let cached = count(usage, "cache_read_input_tokens");
        raw.tokens = Some(Tokens {
            input: count(usage, "input_tokens")
                .saturating_add(count(usage, "cache_creation_input_tokens"))
                .saturating_add(cached),
            output: count(usage, "output_tokens"),
            cached,
        });
    }
    raw.cost = result.get("total_cost_usd").and_then(Value::as_f64);
}

fn subtype_or(subtype: &str) -> &str {
    if subtype.is_empty() {
        "no subtype"
    } else {
        subtype
    }
}

impl LineSink for ClaudeReader {
    fn line(&mut self, stream: Stream, line: &str, cut: bool) {
        if stream == Stream::Stderr {
            self.seen.push(line);
            return;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return;
        }
        self.said = true;
        if !trimmed.starts_with('{') {
            self.seen.push(line);
            return;
        }
        match serde_json::from_str::<Value>(trimmed) {
            Ok(value) => {
                self.bad = None;
                self.event(value);
            }
            Err(err) if self.result.is_none() => {
                self.bad = Some(unreadable(FORMAT, &err, line.len(), cut));
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use crate::agent::test_support::{failed, fixture, limited, now, read};
    use crate::agent::{OutputFormat, Price, Reader, Stream, Tokens, Usd, Verdict};

    fn claude(case: &str, exit: i32) -> crate::agent::AgentReport {
        read(OutputFormat::ClaudeJson, "claude", case, Some(exit), None)
    }

    #[test]
    fn success_with_usage_and_cost() {
        let r = claude("success", 0);
        assert_eq!(r.verdict, Verdict::Ok);
        assert!(
            r.answer.contains("\nHANDOFF: heap bound check added"),
            "{}",
            r.answer
        );
        assert_eq!(
            r.tokens,
            Some(Tokens {
                input: 1_200,
                output: 340,
                cached: 800
            })
        );
        assert_eq!(r.cost_usd, Some(0.0123));
        assert_eq!(r.note, "tokens in/out/cached 1200/340/800");
    }

    #[test]
    fn not_logged_in_is_an_error_whatever_the_subtype_and_exit() {
        for exit in [1, 0] {
            let r = claude("not-logged-in", exit);
            assert_eq!(failed(&r), "Not logged in · Please run /login");
            assert_eq!(r.answer, "");
            assert_eq!(r.cost_usd, Some(0.0));
        }
        let r = claude("connection-refused", 1);
        assert_eq!(
            failed(&r),
            "API Error: Unable to connect to API (ConnectionRefused)"
        );
    }

    #[test]
    fn session_limit_resets_at_3pm_new_york() {
        let r = claude("session-limit", 1);
        let (until, message) = limited(&r);
        assert_eq!(
            until,
            Some(chrono::Utc.with_ymd_and_hms(2026, 12, 2, 20, 0, 0).unwrap())
        );
        assert!(message.starts_with("You've hit your session limit"));
    }

    #[test]
    fn usage_limit_with_a_past_epoch_has_no_reset() {
        let r = claude("usage-limit-epoch", 0);
        let (until, message) = limited(&r);
        assert_eq!(until, None, "1762952400 is before now");
        assert_eq!(message, "Claude AI usage limit reached|1762952400");
    }

    #[test]
    fn overloaded_529() {
        let (until, message) = limited(&claude("overloaded", 1));
        assert_eq!(until, None);
        assert!(message.starts_with("API Error: Repeated 529 Overloaded errors"));
    }

    #[test]
    fn error_subtype_text_from_errors() {
        let r = claude("max-turns", 1);
        assert_eq!(failed(&r), "Reached maximum number of turns (3)");
        assert_eq!(r.cost_usd, Some(0.0871));
        assert_eq!(r.tokens.unwrap().input, 30 + 5_120 + 20_480);
    }

    #[test]
    fn truncated_result_says_what_could_not_be_read() {
        let r = claude("truncated", 0);
        let error = failed(&r);
        assert!(
            error.starts_with("could not read the claude-json output: it ends early"),
            "{error}"
        );
    }

    #[test]
    fn stream_json_reads_the_final_result() {
        let r = read(
            OutputFormat::ClaudeJson,
            "claude",
            "stream-success",
            Some(0),
            None,
        );
        assert_eq!(r.verdict, Verdict::Ok);
        assert!(r.answer.contains("HANDOFF:"));
        assert_eq!(r.cost_usd, Some(0.0123));
        let r = read(
            OutputFormat::ClaudeJson,
            "claude",
            "stream-not-logged-in",
            Some(1),
            None,
        );
        assert_eq!(failed(&r), "Not logged in · Please run /login");
    }

    #[test]
    fn stderr_only_failure_names_the_error() {
        let r = read(
            OutputFormat::ClaudeJson,
            "claude",
            "stream-needs-verbose",
            Some(1),
            None,
        );
        assert_eq!(
            failed(&r),
            "exit status 1: Error: When using --print, --output-format=stream-json requires --verbose"
        );
    }

    #[test]
    fn result_far_longer_than_a_protocol_line_is_read() {
        let answer = format!("{}\nHANDOFF: done", "x".repeat(200 * 1024));
        let line = serde_json::json!({
            "type": "result", "subtype": "success", "is_error": false,
            "result": answer, "total_cost_usd": 0.5,
        })
        .to_string();
        let mut reader = Reader::new(OutputFormat::ClaudeJson, None);
        crate::agent::LineSink::line(&mut reader, Stream::Stdout, &line, false);
        let r = reader.finish(Some(0), now());
        assert_eq!(r.verdict, Verdict::Ok);
        assert_eq!(r.answer, answer);
    }

    #[test]
    fn price_is_used_only_without_a_reported_cost() {
        let price = Price {
            input_per_mtok: Usd(3.0),
            output_per_mtok: Usd(15.0),
            cached_input_per_mtok: None,
        };
        let r = read(
            OutputFormat::ClaudeJson,
            "claude",
            "success",
            Some(0),
            Some(price),
        );
        assert_eq!(r.cost_usd, Some(0.0123));
        assert!(fixture("claude", "success.stdout").is_some());
    }

    #[test]
    fn empty_output_is_no_output() {
        let reader = Reader::new(OutputFormat::ClaudeJson, None);
        assert_eq!(reader.finish(Some(0), now()).verdict, Verdict::NoOutput);
        let reader = Reader::new(OutputFormat::ClaudeJson, None);
        assert_eq!(
            reader.finish(Some(1), now()).verdict,
            Verdict::Failed {
                error: "exit status 1".into()
            }
        );
    }
}
