//! `agent::Reader` with `output = "auto"` on arbitrary lines from both streams.
//!
//! Input: the first byte picks the exit status (0, 1, or none for a signal), then lines
//! separated by `\n`; a line starting with `!` goes to stderr, one starting with `~` arrives
//! marked cut. Properties: no panic; a success has an answer; a failure or a limit has text
//! and a one-line headline; a reset instant lies after `now`; tokens' cached part is never
//! more than what the reader was told, and costs are finite and not negative.

#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use loop_orchestrator::agent::{LineSink, OutputFormat, Price, Reader, Stream, Usd, Verdict};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let exit = match first % 3 {
        0 => Some(0),
        1 => Some(1),
        _ => None,
    };
    let price = (first & 0x80 != 0).then_some(Price {
        input_per_mtok: Usd(3.0),
        output_per_mtok: Usd(15.0),
        cached_input_per_mtok: None,
    });
    let text = String::from_utf8_lossy(rest);
    let mut reader = Reader::new(OutputFormat::Auto, price);
    for line in text.split('\n') {
        let (stream, line) = match line.strip_prefix('!') {
            Some(l) => (Stream::Stderr, l),
            None => (Stream::Stdout, line),
        };
        let (cut, line) = match line.strip_prefix('~') {
            Some(l) => (true, l),
            None => (false, line),
        };
        reader.line(stream, line, cut);
    }
    let now = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap();
    let report = reader.finish(exit, now);
    match &report.verdict {
        Verdict::Ok => assert!(!report.answer.trim().is_empty(), "ok without an answer"),
        Verdict::Failed { error } => assert!(!error.is_empty(), "failed without text"),
        Verdict::RateLimited { until, message } => {
            assert!(!message.is_empty(), "limited without text");
            assert!(until.is_none_or(|at| at > now), "reset not after now: {until:?}");
        }
        Verdict::NoOutput => assert_eq!(exit, Some(0), "no output on a failed exit"),
    }
    assert!(!report.headline().contains('\n'), "headline spans lines");
    if let Some(cost) = report.cost_usd {
        assert!(cost.is_finite() && cost >= 0.0, "cost {cost}");
    }
});
