//! The fake agents (tests/fixtures/fake-*.sh) run as real processes, their output read by the
//! agent readers: each case gives the verdict the real CLI's output gives, in both the
//! agent's own format and `auto`.

mod common;

use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use loop_orchestrator::agent::{
    AgentReport, LineSink, OutputFormat, Price, Reader, Stream, Usd, Verdict,
};

/// The price the fakes name for codex and gemini: their success usage then costs 0.0123.
const PRICE: Price = Price {
    input_per_mtok: Usd(1.0),
    output_per_mtok: Usd(10.0),
    cached_input_per_mtok: Some(Usd(0.1)),
};

fn run(
    agent: &str,
    case: &str,
    format: OutputFormat,
    now: DateTime<Utc>,
) -> (AgentReport, Option<i32>) {
    let out = Command::new(common::fixture(&format!("fake-{agent}.sh")))
        .env("FAKE_CASE", case)
        .stdin(Stdio::null())
        .output()
        .expect("the fake agent runs");
    let mut reader = Reader::new(format, Some(PRICE));
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        reader.line(Stream::Stderr, line, false);
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        reader.line(Stream::Stdout, line, false);
    }
    let code = out.status.code();
    (reader.finish(code, now), code)
}

fn both(agent: &str, case: &str, own: OutputFormat) -> (AgentReport, Option<i32>) {
    let now = Utc::now();
    let (report, code) = run(agent, case, own, now);
    let (auto, _) = run(agent, case, OutputFormat::Auto, now);
    assert_eq!(
        report.verdict, auto.verdict,
        "{agent} {case}: auto reads it alike"
    );
    (report, code)
}

fn each(agent: &str, own: OutputFormat) {
    let (ok, code) = both(agent, "success", own);
    assert_eq!((ok.verdict.clone(), code), (Verdict::Ok, Some(0)), "{ok:?}");
    assert!((ok.cost_usd.unwrap() - 0.0123).abs() < 1e-9, "{ok:?}");
    assert!(ok.answer.contains("HANDOFF: "), "{ok:?}");
    assert!(ok.note.starts_with("tokens in/out/cached "), "{ok:?}");

    for case in ["error", "error-exit0", "truncated"] {
        let (report, _) = both(agent, case, own);
        assert!(
            matches!(report.verdict, Verdict::Failed { .. }),
            "{agent} {case}: {report:?}"
        );
        assert!(!report.headline().is_empty());
    }
    let (_, code) = both(agent, "error-exit0", own);
    assert_eq!(code, Some(0));

    let (limited, _) = both(agent, "rate-limit", own);
    let Verdict::RateLimited { until, .. } = limited.verdict else {
        panic!("{agent} rate-limit: {limited:?}");
    };
    let until = until.expect("the fakes name a reset time");
    assert!(until > Utc::now() && until < Utc::now() + chrono::Duration::days(1));

    let (big, _) = both(agent, "big", own);
    assert_eq!(big.verdict, Verdict::Ok, "{agent} big");
    assert!(big.answer.len() > 200 * 1024);
    assert!(
        big.answer.ends_with("HANDOFF: big answer done"),
        "{agent} big"
    );

    let (empty, code) = both(agent, "empty", own);
    assert_eq!((empty.verdict, code), (Verdict::NoOutput, Some(0)));
}

#[test]
fn fake_claude() {
    each("claude", OutputFormat::ClaudeJson);
    let (report, _) = both("claude", "overloaded", OutputFormat::ClaudeJson);
    assert!(matches!(
        report.verdict,
        Verdict::RateLimited { until: None, .. }
    ));
}

#[test]
fn fake_claude_reset_epoch() {
    let at = Utc::now().timestamp() + 3_600;
    let out = Command::new(common::fixture("fake-claude.sh"))
        .args(["-p", "--output-format", "json", "rate-limit"])
        .env("FAKE_RESET_EPOCH", at.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut reader = Reader::new(OutputFormat::ClaudeJson, None);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        reader.line(Stream::Stdout, line, false);
    }
    let report = reader.finish(out.status.code(), Utc::now());
    assert_eq!(
        report.verdict,
        Verdict::RateLimited {
            until: chrono::DateTime::from_timestamp(at, 0),
            message: format!("Claude AI usage limit reached|{at}"),
        }
    );
}

#[test]
fn fake_codex() {
    each("codex", OutputFormat::CodexJsonl);
    let (retry, _) = both("codex", "retry", OutputFormat::CodexJsonl);
    assert_eq!(retry.verdict, Verdict::Ok);
    let (none, code) = both("codex", "no-outcome", OutputFormat::CodexJsonl);
    assert_eq!(code, Some(1));
    assert!(
        none.headline()
            .starts_with("codex ended with no turn outcome after: Reconnecting..."),
        "{none:?}"
    );
}

#[test]
fn fake_gemini() {
    each("gemini", OutputFormat::GeminiJson);
    let (untrusted, code) = both("gemini", "untrusted", OutputFormat::GeminiJson);
    assert_eq!(code, Some(55));
    assert!(
        untrusted
            .headline()
            .contains("not running in a trusted directory")
    );
}
