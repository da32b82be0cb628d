//! Plain text output: aider, and any command without a structured format.
//!
//! The answer is all of stdout (up to [`MAX_KEPT`](super::MAX_KEPT)). Aider prints text only
//! and exits 0 even after giving up on an API error (aider/coders/base_coder.py): it prints
//! `litellm.<Name>Error: ...` and its own description (`The API provider has rate limited
//! you. Try again later or check your quotas.`, `The API provider's servers are down or
//! overloaded.`), then `Retrying in N seconds...` while it retries (for about a minute), and
//! nothing more when it gives up. Each answer ends with a usage line: `Tokens: 12k sent,
//! 1.2k cache write, 8.0k cache hit, 340 received. Cost: $0.0123 message, $0.0123 session.`
//!
//! Rules:
//! - An API error with no usage line after it (the agent gave up) fails the run; a limit or
//!   overload error makes it rate limited. A usage line after the error means a retry
//!   worked.
//! - Tokens are summed over the usage lines (aider rounds them: `12k`); the cost is the last
//!   `session` cost.
//! - Otherwise only the exit status and, on a failure, the last lines' wording count: free
//!   text mentions limits too often (a test named after them) to judge an exit 0 by it.

use std::sync::LazyLock;

use regex::Regex;

use super::{LineSink, Price, Raw, Seen, Stream, Tokens, keep, strip_ansi};

static API_ERROR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^litellm\.[A-Za-z]*(Error|Exception|Timeout)\b")
        .expect("the API error pattern compiles")
});

static USAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Tokens: ([\d.]+k?) sent(?:, ([\d.]+k?) cache write)?(?:, ([\d.]+k?) cache hit)?, ([\d.]+k?) received\.")
        .expect("the usage pattern compiles")
});

static COST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"Cost: \$[\d.]+ message, \$([\d.]+) session\.").expect("the cost pattern compiles")
});

#[derive(Debug)]
pub struct TextReader {
    price: Option<Price>,
    answer: String,
    /// An API error not followed by a usage line yet, with the description after it.
    pending: Option<String>,
    /// The previous stdout line was an API error whose description may follow.
    describing: bool,
    tokens: Option<Tokens>,
    cost: Option<f64>,
    seen: Seen,
}

impl TextReader {
    pub fn new(price: Option<Price>) -> TextReader {
        TextReader {
            price,
            answer: String::new(),
            pending: None,
            describing: false,
            tokens: None,
            cost: None,
            seen: Seen::default(),
        }
    }

    pub(super) fn into_raw(self) -> (Raw, Option<Price>) {
        let raw = Raw {
            error: self.pending.map(|text| (text, None)),
            answer: self.answer,
            tokens: self.tokens,
            cost: self.cost,
            seen: self.seen,
            ..Raw::default()
        };
        (raw, self.price)
    }

    fn usage(&mut self, line: &str) -> bool {
        let Some(caps) = USAGE.captures(line) else {
            return false;
        };
        let amount = |i: usize| caps.get(i).map_or(0, |m| thousands(m.as_str()));
        // `sent` already counts cache writes; cache hits are apart from it.
        let (sent, hit, received) = (amount(1), amount(3), amount(4));
        self.tokens.get_or_insert_default().add(Tokens {
            input: sent.saturating_add(hit),
            output: received,
            cached: hit,
        });
        if let Some(cost) = COST
            .captures(line)
            .and_then(|c| c.get(1)?.as_str().parse().ok())
        {
            self.cost = Some(cost);
        }
        true
    }
}

/// `12k` → 12000, `1.2k` → 1200, `340` → 340.
fn thousands(text: &str) -> u64 {
    let (number, scale) = match text.strip_suffix('k') {
        Some(n) => (n, 1_000.0),
        None => (text, 1.0),
    };
    number.parse::<f64>().map_or(0, |n| {
        (n * scale).round().clamp(0.0, u64::MAX as f64) as u64
    })
}

impl LineSink for TextReader {
    fn line(&mut self, stream: Stream, line: &str, _cut: bool) {
        let clean = strip_ansi(line);
        let trimmed = clean.trim();
        if stream == Stream::Stdout {
            if !self.answer.is_empty() || !trimmed.is_empty() {
                keep(&mut self.answer, &clean);
                keep(&mut self.answer, "\n");
            }
            if API_ERROR.is_match(trimmed) {
                self.pending = Some(trimmed.to_string());
                self.describing = true;
                return;
            }
            if self.describing && !trimmed.is_empty() && !trimmed.starts_with("Retrying in") {
                // Aider's description of the error, on the line after it (the error itself
                // may wrap over more lines first; the description is what names the cause).
                if let Some(pending) = &mut self.pending
                    && pending.len() < 2_000
                {
                    pending.push(' ');
                    pending.push_str(trimmed);
                }
                return;
            }
            self.describing = false;
            if self.usage(trimmed) {
                self.pending = None;
            }
        }
        self.seen.push(&clean);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use crate::agent::test_support::{failed, limited, now, read};
    use crate::agent::{AgentReport, LineSink, OutputFormat, Reader, Stream, Tokens, Verdict};

    fn aider(case: &str, exit: i32) -> AgentReport {
        read(OutputFormat::Text, "aider", case, Some(exit), None)
    }

    #[test]
    fn success_after_a_retry_with_usage_and_cost() {
        let r = aider("success", 0);
        assert_eq!(r.verdict, Verdict::Ok);
        assert!(r.answer.contains("\nHANDOFF: heap bound check added"));
        assert_eq!(
            r.tokens,
            Some(Tokens {
                input: 12_000,
                output: 340,
                cached: 0
            })
        );
        assert_eq!(r.cost_usd, Some(0.0123));
    }

    #[test]
    fn gave_up_on_a_rate_limit_with_exit_0() {
        let (until, message) = limited(&aider("rate-limit", 0));
        assert_eq!(until, None);
        assert!(
            message.starts_with("litellm.RateLimitError: AnthropicException"),
            "{message}"
        );
        assert!(message.ends_with(
            "The API provider has rate limited you. Try again later or check your quotas."
        ));
    }

    #[test]
    fn gave_up_on_an_auth_error_with_exit_0() {
        let r = aider("auth-error", 0);
        assert!(
            failed(&r)
                .ends_with("The API provider is not able to authenticate you. Check your API key.")
        );
    }

    #[test]
    fn captured_network_failure_reads_as_overload() {
        // aider 0.86.2, fake key, no network: it calls the DNS failure "down or overloaded".
        let (_, message) = limited(&aider("no-network", 0));
        assert!(
            message.contains("The API provider's servers are down or overloaded."),
            "{message}"
        );
        let r = aider("no-key", 1);
        assert_eq!(
            failed(&r),
            "exit status 1: Authentication with OpenRouter failed."
        );
    }

    #[test]
    fn plain_commands_are_judged_by_exit_status() {
        let mut reader = Reader::new(OutputFormat::Text, None);
        reader.line(
            Stream::Stdout,
            "test limit::tests::rate_limit_pause ... ok",
            false,
        );
        reader.line(Stream::Stdout, "test result: ok. 1 passed", false);
        assert_eq!(reader.finish(Some(0), now()).verdict, Verdict::Ok);

        let mut reader = Reader::new(OutputFormat::Text, None);
        reader.line(
            Stream::Stderr,
            "You've hit your limit · resets 1pm (Europe/Lisbon)",
            false,
        );
        let r = reader.finish(Some(1), now());
        let (until, _) = limited(&r);
        assert_eq!(
            until,
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 13, 0, 0).unwrap())
        );

        let reader = Reader::new(OutputFormat::Text, None);
        assert_eq!(reader.finish(Some(0), now()).verdict, Verdict::NoOutput);
    }
}
