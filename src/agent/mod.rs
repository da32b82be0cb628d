//! Agents as modes (SPEC §8): the presets of the known coding-agent CLIs and the readers of
//! what they print.
//!
//! A mode that runs an agent is judged by what the agent says, not only by its exit code.
//! A [`Reader`] is fed the child's lines as they arrive ([`LineSink`]) and, when the child
//! has exited, [`Reader::finish`] returns an [`AgentReport`]: the verdict (ok, failed with
//! the agent's own error text, rate limited with the reset instant when the agent names one,
//! or no output), the answer text (read for the MEMORY/HANDOFF/BLOCKED protocol), the tokens
//! and the cost.
//!
//! Rules:
//! - An error the agent reports wins over its exit status: Claude's `is_error: true` whatever
//!   its `subtype`, a Codex turn that ends `turn.failed` (or a stream with no turn outcome),
//!   a Gemini `error` object, an aider API error it gave up on. An exit 0 does not make these
//!   a success.
//! - Output that cannot be read as its format (malformed or cut JSON) is a failure whose text
//!   says what could not be read; nothing panics on any input.
//! - What a reader keeps is bounded by [`MAX_KEPT`], the run log's cap: an answer far longer
//!   than one protocol line is still read whole.
//! - Readers know nothing of cycles, schedules or the runner; the cycle decides what a
//!   verdict does (fallbacks, pauses, `expect_output`).
//!
//! The formats are those the CLIs print; `tests/fixtures/agents/README.md` names the source
//! of every sample (a captured run of the CLI, or the agent's own source code or issues).

pub mod auto;
pub mod claude;
pub mod codex;
pub mod gemini;
pub mod limit;
pub mod price;
pub mod text;

use std::collections::VecDeque;
use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Deserialize;

use crate::runner::PromptDelivery as PromptKind;

pub use crate::runner::{LineSink, Stream};
pub use price::{Price, Usd};

/// The most a reader keeps of one run's output: the run log's cap (8 MiB), so that anything
/// the log holds can be read.
pub const MAX_KEPT: usize = crate::runner::LOG_CAP as usize;
/// How much of stderr is kept to explain a failure.
const STDERR_KEPT: usize = 64 * 1024;
/// Longest error text carried into a report (the timing note holds 500 characters).
const ERROR_CHARS: usize = 400;

/// A known agent CLI, named by `agent = "..."` in a mode's front matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Agent {
    Claude,
    Codex,
    Gemini,
    Aider,
}

impl Agent {
    pub const ALL: [Agent; 4] = [Agent::Claude, Agent::Codex, Agent::Gemini, Agent::Aider];

    pub fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini",
            Agent::Aider => "aider",
        }
    }

    pub fn preset(self) -> &'static Preset {
        &PRESETS[self as usize]
    }

    /// The agent of a name as written in front matter (`claude`, `codex`, ...).
    pub fn from_name(name: &str) -> Option<Agent> {
        Agent::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an agent's output is read (`output = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Recognise a Claude result, Codex JSONL events or a Gemini JSON document; else text.
    #[default]
    Auto,
    Text,
    ClaudeJson,
    CodexJsonl,
    GeminiJson,
}

impl OutputFormat {
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Auto => "auto",
            OutputFormat::Text => "text",
            OutputFormat::ClaudeJson => "claude-json",
            OutputFormat::CodexJsonl => "codex-jsonl",
            OutputFormat::GeminiJson => "gemini-json",
        }
    }
}

/// The headless command of an agent CLI and how it is fed and read.
#[derive(Debug)]
pub struct Preset {
    pub agent: Agent,
    pub argv: &'static [&'static str],
    pub prompt: PromptKind,
    pub output: OutputFormat,
    /// Set for the child unless the mode sets it.
    pub env: &'static [(&'static str, &'static str)],
}

/// The presets, in [`Agent`] order. Each was checked against the CLI's own `--help` and a
/// headless run (see tests/fixtures/agents/README.md):
/// - claude: `-p` reads the prompt from stdin; one JSON result object on stdout.
/// - codex: `-` reads the prompt from stdin; `--json` prints JSONL events. `--full-auto`
///   (the older spelling of a workspace-write sandbox) is refused by codex 0.171 with exit 2,
///   `--sandbox workspace-write` is accepted by old and new releases alike.
/// - gemini: `-p ""` is headless with the prompt from stdin appended; one pretty-printed
///   JSON document, on stdout on success and on stderr on error. Gemini 0.61 refuses to run
///   headless in a folder not marked trusted (exit 55); the mode's own working directory is
///   what it is told to work in, so the preset trusts it.
/// - aider: reads the prompt file; prints text only, `--no-pretty` keeps colour codes out.
pub const PRESETS: [Preset; 4] = [
    Preset {
        agent: Agent::Claude,
        argv: &["claude", "-p", "--output-format", "json"],
        prompt: PromptKind::Stdin,
        output: OutputFormat::ClaudeJson,
        env: &[],
    },
    Preset {
        agent: Agent::Codex,
        argv: &[
            "codex",
            "exec",
            "--json",
            "--sandbox",
            "workspace-write",
            "--skip-git-repo-check",
            "-",
        ],
        prompt: PromptKind::Stdin,
        output: OutputFormat::CodexJsonl,
        env: &[],
    },
    Preset {
        agent: Agent::Gemini,
        argv: &["gemini", "-p", "", "--output-format", "json"],
        prompt: PromptKind::Stdin,
        output: OutputFormat::GeminiJson,
        env: &[("GEMINI_CLI_TRUST_WORKSPACE", "true")],
    },
    Preset {
        agent: Agent::Aider,
        argv: &[
            "aider",
            "--yes-always",
            "--no-pretty",
            "--message-file",
            "{prompt_file}",
        ],
        prompt: PromptKind::File,
        output: OutputFormat::Text,
        env: &[],
    },
];

/// Token counts of one run. `input` includes the `cached` part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
}

impl Tokens {
    fn add(&mut self, other: Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cached = self.cached.saturating_add(other.cached);
    }
}

/// What the agent's run amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ok,
    /// The agent reported an error, or its output could not be read; `error` is its own text.
    Failed {
        error: String,
    },
    /// A rate limit, usage limit, quota or overload; `until` when the agent said when it ends.
    RateLimited {
        until: Option<DateTime<Utc>>,
        message: String,
    },
    /// Exit 0 and nothing said (a failure only where the mode expects output).
    NoOutput,
}

/// A reader's account of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    pub verdict: Verdict,
    /// The agent's answer (its final message), read for the output protocol.
    pub answer: String,
    pub tokens: Option<Tokens>,
    /// As the agent reported it, else computed from the mode's price when tokens are known.
    pub cost_usd: Option<f64>,
    /// `tokens in/out/cached 1200/340/800`, or empty.
    pub note: String,
    /// The format the output was read as (what `auto` recognised): only a structured one
    /// (not `text`) has an answer apart from the output itself.
    pub format: OutputFormat,
}

impl AgentReport {
    /// The start of the run's note: the agent's error text, `rate limited until <RFC 3339>:
    /// ...`, `no output`, or empty for a success.
    pub fn headline(&self) -> String {
        match &self.verdict {
            Verdict::Ok => String::new(),
            Verdict::Failed { error } => error.clone(),
            Verdict::RateLimited { until, message } => match until {
                Some(at) => format!(
                    "rate limited until {}: {message}",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
                None => format!("rate limited: {message}"),
            },
            Verdict::NoOutput => "no output".into(),
        }
    }
}

/// The reader of one run's output, chosen by the mode's output format.
#[derive(Debug)]
pub enum Reader {
    Claude(claude::ClaudeReader),
    Codex(codex::CodexReader),
    Gemini(gemini::GeminiReader),
    Text(text::TextReader),
    Auto(auto::AutoReader),
}

impl Reader {
    pub fn new(format: OutputFormat, price: Option<Price>) -> Reader {
        match format {
            OutputFormat::Auto => Reader::Auto(auto::AutoReader::new(price)),
            OutputFormat::Text => Reader::Text(text::TextReader::new(price)),
            OutputFormat::ClaudeJson => Reader::Claude(claude::ClaudeReader::new(price)),
            OutputFormat::CodexJsonl => Reader::Codex(codex::CodexReader::new(price)),
            OutputFormat::GeminiJson => Reader::Gemini(gemini::GeminiReader::new(price)),
        }
    }

    /// The report once the child has exited (`None`: ended by a signal). A wall-clock reset
    /// time without a zone is read in this machine's zone, as the agents print it.
    pub fn finish(self, exit_code: Option<i32>, now: DateTime<Utc>) -> AgentReport {
        self.finish_in(exit_code, now, &chrono::Local)
    }

    /// [`Reader::finish`] with the zone of wall-clock times that name none.
    pub fn finish_in<Z: TimeZone>(
        self,
        exit_code: Option<i32>,
        now: DateTime<Utc>,
        zone: &Z,
    ) -> AgentReport {
        let format = self.format();
        let (raw, price) = match self {
            Reader::Claude(r) => r.into_raw(),
            Reader::Codex(r) => r.into_raw(),
            Reader::Gemini(r) => r.into_raw(),
            Reader::Text(r) => r.into_raw(),
            Reader::Auto(r) => return r.finish_in(exit_code, now, zone),
        };
        judge(raw, price, format, exit_code, now, zone)
    }

    /// The format this reader reads (`auto` until it has recognised one).
    fn format(&self) -> OutputFormat {
        match self {
            Reader::Claude(_) => OutputFormat::ClaudeJson,
            Reader::Codex(_) => OutputFormat::CodexJsonl,
            Reader::Gemini(_) => OutputFormat::GeminiJson,
            Reader::Text(_) => OutputFormat::Text,
            Reader::Auto(_) => OutputFormat::Auto,
        }
    }
}

impl LineSink for Reader {
    fn line(&mut self, stream: Stream, line: &str, cut: bool) {
        match self {
            Reader::Claude(r) => r.line(stream, line, cut),
            Reader::Codex(r) => r.line(stream, line, cut),
            Reader::Gemini(r) => r.line(stream, line, cut),
            Reader::Text(r) => r.line(stream, line, cut),
            Reader::Auto(r) => r.line(stream, line, cut),
        }
    }

    /// An agent's answer may be one line of many megabytes (a JSON result): read whole up to
    /// what a run's log keeps, from both pipes (some agents report errors on stderr).
    fn line_limit(&self, _stream: Stream) -> usize {
        MAX_KEPT
    }
}

/// What a format reader found, before the rules common to all formats are applied.
#[derive(Debug, Default)]
struct Raw {
    /// The agent's own error report: its text and the HTTP status it gave, if any.
    error: Option<(String, Option<u16>)>,
    /// The output could not be read as its format: what went wrong.
    unreadable: Option<String>,
    answer: String,
    tokens: Option<Tokens>,
    cost: Option<f64>,
    /// Lines the reader kept to explain a failure that has no structured error.
    seen: Seen,
}

/// The common rules: a reported error, then unreadable output, then the exit status, then
/// whether anything was said.
fn judge<Z: TimeZone>(
    raw: Raw,
    price: Option<Price>,
    format: OutputFormat,
    exit_code: Option<i32>,
    now: DateTime<Utc>,
    zone: &Z,
) -> AgentReport {
    let exit_text = match exit_code {
        Some(0) => None,
        Some(code) => Some(format!("exit status {code}")),
        None => Some("ended by a signal".to_string()),
    };
    let limited = |message: String| Verdict::RateLimited {
        until: limit::reset_at(&message, now, zone),
        message: clip(&message),
    };
    let verdict = if let Some((text, status)) = &raw.error {
        if limit::is_limit_error(*status, text) {
            limited(text.clone())
        } else {
            Verdict::Failed { error: clip(text) }
        }
    } else if let Some(problem) = &raw.unreadable {
        match raw.seen.limit_line() {
            Some(line) => limited(line),
            None => Verdict::Failed {
                error: clip(&match &exit_text {
                    Some(exit) => format!("{problem}; {exit}"),
                    None => problem.clone(),
                }),
            },
        }
    } else if let Some(exit) = &exit_text {
        match (raw.seen.limit_line(), raw.seen.error_line()) {
            (Some(line), _) => limited(line),
            (None, Some(line)) => Verdict::Failed {
                error: clip(&format!("{exit}: {line}")),
            },
            (None, None) => Verdict::Failed {
                error: exit.clone(),
            },
        }
    } else if raw.answer.trim().is_empty() {
        Verdict::NoOutput
    } else {
        Verdict::Ok
    };
    let cost = raw
        .cost
        .filter(|c| c.is_finite() && *c >= 0.0)
        .or_else(|| Some(price?.cost(raw.tokens?)));
    let note = raw.tokens.map_or(String::new(), |t| {
        format!("tokens in/out/cached {}/{}/{}", t.input, t.output, t.cached)
    });
    AgentReport {
        verdict,
        answer: raw.answer,
        tokens: raw.tokens,
        cost_usd: cost,
        note,
        format,
    }
}

/// Lines kept besides the format's own: stderr's tail and stdout text that is not the
/// format, to explain a failure that has no structured error.
#[derive(Debug, Default)]
struct Seen {
    tail: VecDeque<String>,
    tail_bytes: usize,
    /// The first line that reads as an error ("error: ...", "Error ..."), kept apart from the
    /// tail because the lines after it are often usage or help text.
    first_error: Option<String>,
}

impl Seen {
    fn push(&mut self, line: &str) {
        let line = strip_ansi(line);
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        if self.first_error.is_none() && looks_like_error(line) {
            self.first_error = Some(clip(line));
        }
        self.tail_bytes += line.len();
        self.tail.push_back(line.to_string());
        while self.tail_bytes > STDERR_KEPT && self.tail.len() > 1 {
            if let Some(old) = self.tail.pop_front() {
                self.tail_bytes -= old.len();
            }
        }
    }

    /// A line of the last few that words a rate limit, usage limit or overload.
    fn limit_line(&self) -> Option<String> {
        self.tail
            .iter()
            .rev()
            .take(5)
            .find(|line| limit::is_limit_line(line))
            .cloned()
    }

    /// The line that best explains a failure: the first error line, else the last line.
    fn error_line(&self) -> Option<String> {
        self.first_error
            .clone()
            .or_else(|| self.tail.back().map(|l| clip(l)))
    }
}

fn looks_like_error(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    [
        "error",
        "fatal",
        "failed",
        "refused",
        "not logged in",
        "please set",
    ]
    .iter()
    .any(|word| lower.contains(word))
        && !lower.starts_with("warning")
}

/// Removes the terminal colour and cursor sequences (`ESC [ ... letter`) some agents print
/// even to a pipe. Written here: only CSI sequences occur in the captured output, and a
/// crate for the whole ANSI grammar would be more than this needs.
pub fn strip_ansi(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\u{1b}') {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out.into()
}

/// One line of at most [`ERROR_CHARS`] characters.
fn clip(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= ERROR_CHARS {
        return one;
    }
    let mut cut: String = one.chars().take(ERROR_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Appends `text` to `out` as far as [`MAX_KEPT`] allows; false once full.
fn keep(out: &mut String, text: &str) -> bool {
    let room = MAX_KEPT.saturating_sub(out.len());
    if text.len() <= room {
        out.push_str(text);
        return true;
    }
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&text[..end]);
    false
}

/// Says why a JSON line could not be read, naming the format and whether the line was cut.
fn unreadable(format: &str, err: &serde_json::Error, line_len: usize, cut: bool) -> String {
    let what = if err.is_eof() {
        "it ends early"
    } else {
        "it is not valid JSON"
    };
    let cut = if cut {
        format!(" (the line was cut at {line_len} bytes)")
    } else {
        String::new()
    };
    format!(
        "could not read the {format} output: {what} ({}){cut}",
        strip_position(&err.to_string())
    )
}

fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at])
}

/// An unsigned integer field of a JSON object, 0 when absent or of another type.
fn count(value: &serde_json::Value, key: &str) -> u64 {
    value
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Feeds fixture files to a reader as the runner would: line by line, each stream in turn.

    use std::path::PathBuf;

    use chrono::{DateTime, TimeZone, Utc};

    use super::*;

    pub fn fixture(agent: &str, name: &str) -> Option<String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/agents")
            .join(agent)
            .join(name);
        std::fs::read_to_string(path).ok()
    }

    /// A fixed instant: 2026-12-02 10:00 UTC (05:00 in New York).
    pub fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap()
    }

    /// Runs `agent/case.stdout` and `agent/case.stderr` through a reader of `format`.
    pub fn read(
        format: OutputFormat,
        agent: &str,
        case: &str,
        exit: Option<i32>,
        price: Option<Price>,
    ) -> AgentReport {
        let stdout = fixture(agent, &format!("{case}.stdout"));
        let stderr = fixture(agent, &format!("{case}.stderr"));
        assert!(
            stdout.is_some() || stderr.is_some(),
            "no fixture {agent}/{case}"
        );
        let mut reader = Reader::new(format, price);
        for line in stderr.as_deref().unwrap_or("").lines() {
            reader.line(Stream::Stderr, line, false);
        }
        for line in stdout.as_deref().unwrap_or("").lines() {
            reader.line(Stream::Stdout, line, false);
        }
        reader.finish_in(
            exit,
            now(),
            &crate::zone::Zone::parse("America/New_York").unwrap(),
        )
    }

    pub fn failed(report: &AgentReport) -> &str {
        match &report.verdict {
            Verdict::Failed { error } => error,
            other => panic!("expected failed, got {other:?}"),
        }
    }

    pub fn limited(report: &AgentReport) -> (Option<DateTime<Utc>>, String) {
        match &report.verdict {
            Verdict::RateLimited { until, message } => (*until, message.clone()),
            other => panic!("expected rate limited, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_agent_order() {
        for agent in Agent::ALL {
            assert_eq!(agent.preset().agent, agent);
            assert_eq!(agent.preset().argv[0], agent.name());
        }
    }

    #[test]
    fn headline_names_the_reset_instant() {
        let report = AgentReport {
            verdict: Verdict::RateLimited {
                until: Some(Utc.with_ymd_and_hms(2026, 12, 2, 20, 0, 0).unwrap()),
                message: "usage limit".into(),
            },
            answer: String::new(),
            tokens: None,
            cost_usd: None,
            note: String::new(),
            format: OutputFormat::ClaudeJson,
        };
        assert_eq!(
            report.headline(),
            "rate limited until 2026-12-02T20:00:00Z: usage limit"
        );
    }

    #[test]
    fn strip_ansi_removes_colour() {
        assert_eq!(strip_ansi("\u{1b}[31mred\u{1b}[0m text"), "red text");
        assert_eq!(strip_ansi("plain"), "plain");
        assert_eq!(strip_ansi("cut \u{1b}["), "cut ");
    }

    #[test]
    fn clip_keeps_one_short_line() {
        assert_eq!(clip("a\n b\tc"), "a b c");
        let long = "x".repeat(1000);
        assert_eq!(clip(&long).chars().count(), ERROR_CHARS);
    }
}
