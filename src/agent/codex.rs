//! Codex's `exec --json` JSONL events (codex-rs/exec/src/exec_events.rs).
//!
//! `thread.started`, `turn.started`, `item.started|updated|completed` (an `agent_message`
//! item carries the answer's text), `turn.completed` with `usage: {input_tokens,
//! cached_input_tokens, output_tokens}`, `turn.failed` with `error: {message}`, and `error`
//! with `message`.
//!
//! Rules:
//! - A turn that ends `turn.failed` is a failure with its message. An `error` event followed
//!   by `turn.completed` was only a retry (codex prints `Reconnecting... 2/5 (...)` as
//!   `error` events and carries on).
//! - A stream with no turn outcome at all (codex killed, or still waiting for the network
//!   when stopped) is a failure naming the last error event.
//! - The answer is the last agent message; usage is summed over completed turns. Codex's
//!   `input_tokens` already includes the cached ones.

use serde_json::Value;

use super::{LineSink, Price, Raw, Seen, Stream, Tokens, count, keep, unreadable};

const FORMAT: &str = "codex-jsonl";

#[derive(Debug)]
enum Outcome {
    None,
    Completed,
    Failed(String),
}

#[derive(Debug)]
pub struct CodexReader {
    price: Option<Price>,
    outcome: Outcome,
    answer: String,
    last_error: Option<String>,
    tokens: Option<Tokens>,
    events: usize,
    bad: Option<String>,
    said: bool,
    seen: Seen,
}

impl CodexReader {
    pub fn new(price: Option<Price>) -> CodexReader {
        CodexReader {
            price,
            outcome: Outcome::None,
            answer: String::new(),
            last_error: None,
            tokens: None,
            events: 0,
            bad: None,
            said: false,
            seen: Seen::default(),
        }
    }

    fn event(&mut self, value: &Value) {
        self.events += 1;
        let message = |v: &Value| v.get("message").and_then(Value::as_str).map(str::to_string);
        match value.get("type").and_then(Value::as_str) {
            Some("turn.started") => self.outcome = Outcome::None,
            Some("item.completed") => {
                let item = value.get("item").unwrap_or(&Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("agent_message")
                    && let Some(text) = item.get("text").and_then(Value::as_str)
                {
                    self.answer.clear();
                    keep(&mut self.answer, text);
                }
            }
            Some("error") => self.last_error = message(value),
            Some("turn.completed") => {
                self.outcome = Outcome::Completed;
                self.last_error = None;
                if let Some(usage) = value.get("usage") {
                    self.tokens.get_or_insert_default().add(Tokens {
                        input: count(usage, "input_tokens"),
                        output: count(usage, "output_tokens"),
                        cached: count(usage, "cached_input_tokens"),
                    });
                }
            }
            Some("turn.failed") => {
                let text = value
                    .get("error")
                    .and_then(message)
                    .or_else(|| self.last_error.clone())
                    .unwrap_or_else(|| "turn failed".into());
                self.outcome = Outcome::Failed(text);
            }
            _ => {}
        }
    }

    pub(super) fn into_raw(self) -> (Raw, Option<Price>) {
        let mut raw = Raw {
            tokens: self.tokens,
            seen: self.seen,
            ..Raw::default()
        };
        match self.outcome {
            Outcome::Completed => raw.answer = self.answer,
            Outcome::Failed(text) => raw.error = Some((text, None)),
            Outcome::None => {
                raw.unreadable = if let Some(bad) = self.bad {
                    Some(bad)
                } else if self.events > 0 {
                    Some(match &self.last_error {
                        Some(error) => format!("codex ended with no turn outcome after: {error}"),
                        None => "codex ended with no turn outcome".into(),
                    })
                } else if self.said {
                    Some(format!("no {FORMAT} events on stdout"))
                } else {
                    None
                };
                if let Some(error) = &self.last_error
                    && super::limit::is_limit_error(None, error)
                {
                    raw.error = Some((error.clone(), None));
                }
            }
        }
        (raw, self.price)
    }
}

impl LineSink for CodexReader {
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
            Ok(value) => self.event(&value),
            Err(err) => self.bad = Some(unreadable(FORMAT, &err, line.len(), cut)),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use crate::agent::test_support::{failed, limited, read};
    use crate::agent::{AgentReport, OutputFormat, Price, Tokens, Usd, Verdict};

    fn codex(case: &str, exit: Option<i32>) -> AgentReport {
        read(OutputFormat::CodexJsonl, "codex", case, exit, None)
    }

    #[test]
    fn success_with_usage_priced() {
        // The price fake-codex.sh names: 2000 fresh + 3000 cached × 0.1 + 1000 × 10.
        let price = Price {
            input_per_mtok: Usd(1.0),
            output_per_mtok: Usd(10.0),
            cached_input_per_mtok: Some(Usd(0.1)),
        };
        let r = read(
            OutputFormat::CodexJsonl,
            "codex",
            "success",
            Some(0),
            Some(price),
        );
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
        assert!((r.cost_usd.unwrap() - 0.0123).abs() < 1e-12, "{r:?}");
        assert_eq!(r.note, "tokens in/out/cached 5000/1000/3000");
    }

    #[test]
    fn error_events_before_turn_completed_were_retries() {
        let r = codex("retry-then-success", Some(0));
        assert_eq!(r.verdict, Verdict::Ok);
        assert_eq!(r.tokens.unwrap().input, 5_400);
        assert_eq!(r.cost_usd, None, "no price, no reported cost");
    }

    #[test]
    fn turn_failed_is_a_failure_even_on_exit_0() {
        for exit in [Some(1), Some(0)] {
            let r = codex("turn-failed", exit);
            assert!(
                failed(&r).starts_with("unexpected status 400 Bad Request: Unsupported parameter"),
                "{r:?}"
            );
        }
    }

    #[test]
    fn usage_limit_resets_at_local_time() {
        let (until, message) = limited(&codex("usage-limit", Some(1)));
        // 3:05 PM in New York (the test's local zone) is 20:05 UTC.
        assert_eq!(
            until,
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 20, 5, 0).unwrap())
        );
        assert!(message.starts_with("You've hit your usage limit."));
        let (until, _) = limited(&codex("usage-limit-date", Some(1)));
        assert_eq!(
            until,
            Some(Utc.with_ymd_and_hms(2026, 12, 30, 3, 15, 0).unwrap())
        );
        let (until, message) = limited(&codex("quota-exceeded", Some(1)));
        assert_eq!(until, None);
        assert_eq!(
            message,
            "Quota exceeded. Check your plan and billing details."
        );
    }

    #[test]
    fn stream_without_turn_outcome_is_a_failure() {
        // Captured: codex 0.171 with no network, stopped by `timeout` (exit 124).
        let r = codex("no-network", Some(124));
        assert_eq!(
            failed(&r),
            "codex ended with no turn outcome after: Reconnecting... waiting for network (Connection failed: error sending request); exit status 124"
        );
        let r = codex("no-network", None);
        assert!(failed(&r).ends_with("ended by a signal"));
    }

    #[test]
    fn refused_argument_on_stderr() {
        let r = codex("full-auto-rejected", Some(2));
        assert_eq!(
            failed(&r),
            "exit status 2: error: unexpected argument '--full-auto' found"
        );
    }

    #[test]
    fn truncated_event_stream() {
        let r = codex("truncated", Some(0));
        assert!(
            failed(&r).starts_with("could not read the codex-jsonl output: it"),
            "{r:?}"
        );
    }
}
