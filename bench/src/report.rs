//! What a figure reports and where it goes: markdown table rows on stdout, and with
//! `--write` the figure's block in the benchmarks file.
//!
//! The file keeps what people wrote: only the text between `<!-- bench:KEY -->` and
//! `<!-- /bench:KEY -->` is generated (KEY is `machine` or a figure number), so a cause
//! written under a figure's table survives the next `--write`. A figure whose markers
//! are missing gets a new section at the end.

use std::fmt::Write as _;
use std::path::Path;

/// Whether a measured value meets its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// No target for this line, or sizes too small to judge (smoke).
    Info,
    /// Not measured yet, with the reason ("needs serve").
    Pending(String),
}

impl Verdict {
    pub fn judge(ok: bool) -> Verdict {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }

    fn cell(&self) -> String {
        match self {
            Verdict::Pass => "pass".into(),
            Verdict::Fail => "**FAIL**".into(),
            Verdict::Info => "–".into(),
            Verdict::Pending(why) => why.clone(),
        }
    }
}

/// One table row: one measured quantity of one case.
#[derive(Debug, Clone)]
pub struct Line {
    pub case: String,
    pub metric: String,
    pub ours: String,
    pub baseline: String,
    /// `ours / baseline`.
    pub ratio: Option<f64>,
    /// The ratio is an upper bound (ours was below the resolution).
    pub ratio_bound: bool,
    pub target: String,
    pub verdict: Verdict,
}

impl Line {
    pub fn new(case: impl Into<String>, metric: impl Into<String>) -> Line {
        Line {
            case: case.into(),
            metric: metric.into(),
            ours: "–".into(),
            baseline: "–".into(),
            ratio: None,
            ratio_bound: false,
            target: "–".into(),
            verdict: Verdict::Info,
        }
    }

    pub fn ours(mut self, value: impl Into<String>) -> Line {
        self.ours = value.into();
        self
    }

    pub fn baseline(mut self, value: impl Into<String>) -> Line {
        self.baseline = value.into();
        self
    }

    pub fn ratio(mut self, ratio: Option<f64>) -> Line {
        self.ratio = ratio;
        self
    }

    pub fn target(mut self, target: impl Into<String>, verdict: Verdict) -> Line {
        self.target = target.into();
        self.verdict = verdict;
        self
    }

    pub fn pending(mut self, why: &str) -> Line {
        self.ours = why.into();
        self.verdict = Verdict::Pending(why.into());
        self
    }
}

/// The result of one figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub number: u8,
    pub title: &'static str,
    /// How it was measured, with the sizes of this run.
    pub how: String,
    pub lines: Vec<Line>,
    /// Extra facts printed under the table.
    pub notes: Vec<String>,
    /// Correctness failures found while measuring (torn rows, lost rows, a command that
    /// failed): these make the harness exit non-zero, unlike a missed target.
    pub errors: Vec<String>,
}

impl Figure {
    pub fn new(number: u8, title: &'static str, how: impl Into<String>) -> Figure {
        Figure {
            number,
            title,
            how: how.into(),
            lines: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
        }
    }
}

pub const TABLE_HEAD: &str = "| # | case | metric | ours | baseline | ratio | target | result |\n\
                              | --- | --- | --- | --- | --- | --- | --- | --- |";

fn ratio_cell(ratio: Option<f64>) -> String {
    match ratio {
        None => "–".into(),
        Some(r) if r >= 100.0 => format!("{r:.0}×"),
        Some(r) if r >= 0.01 => format!("{r:.2}×"),
        Some(r) => format!("{r:.4}×"),
    }
}

/// The figure's table rows, one per line, without the head.
pub fn rows(figure: &Figure) -> String {
    let mut out = String::new();
    for line in &figure.lines {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            figure.number,
            line.case,
            line.metric,
            line.ours,
            line.baseline,
            if line.ratio_bound {
                format!("< {}", ratio_cell(line.ratio))
            } else {
                ratio_cell(line.ratio)
            },
            line.target,
            line.verdict.cell()
        );
    }
    out
}

/// The generated block of a figure in the benchmarks file.
fn block(figure: &Figure, sizes: &str, date: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", figure.how);
    let _ = writeln!(
        out,
        "Measured {date}, sizes: {sizes}. Ratio = ours / baseline.\n"
    );
    let _ = writeln!(out, "{TABLE_HEAD}");
    out.push_str(&rows(figure));
    if !figure.notes.is_empty() || !figure.errors.is_empty() {
        out.push('\n');
    }
    for note in &figure.notes {
        let _ = writeln!(out, "- {note}");
    }
    for error in &figure.errors {
        let _ = writeln!(out, "- **error:** {error}");
    }
    out
}

fn markers(key: &str) -> (String, String) {
    (
        format!("<!-- bench:{key} -->"),
        format!("<!-- /bench:{key} -->"),
    )
}

/// `text` with the block of `key` replaced by `body`; `None` when the markers are absent.
fn replace_block(text: &str, key: &str, body: &str) -> Option<String> {
    let (open, close) = markers(key);
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(format!("{}\n{}{}", &text[..start], body, &text[end..]))
}

const PREAMBLE: &str = "# Benchmarks\n\n\
Every figure below is produced by `cargo run --release -p bench -- all --write` (one figure: \
`-- 3 --write`; `--quick` for shorter runs). Each figure measures our code and its baseline \
in the same invocation, on the same machine, so the ratio holds on a noisy machine. Text \
outside the `bench:` markers is written by hand (causes of missed targets) and kept.\n";

/// Rewrites the machine block (unless `machine` is `None`: a figure run on its own leaves
/// the other figures' machine line alone) and the blocks of `figures` in the file at
/// `path`, creating the file when it does not exist.
pub fn write_file(
    path: &Path,
    machine: Option<&str>,
    figures: &[Figure],
    sizes: &str,
    date: &str,
) -> std::io::Result<()> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if text.is_empty() {
        let (open, close) = markers("machine");
        text = format!("{PREAMBLE}\n## Machine\n\n{open}\n{close}\n");
    }
    if let Some(machine) = machine {
        text = replace_block(&text, "machine", machine).unwrap_or_else(|| {
            let (open, close) = markers("machine");
            format!("{text}\n## Machine\n\n{open}\n{machine}{close}\n")
        });
    }
    for figure in figures {
        let key = figure.number.to_string();
        let body = block(figure, sizes, date);
        text = replace_block(&text, &key, &body).unwrap_or_else(|| {
            let (open, close) = markers(&key);
            format!(
                "{text}\n## {}. {}\n\n{open}\n{body}{close}\n",
                figure.number, figure.title
            )
        });
    }
    let temp = path.with_extension("md.tmp");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(number: u8, ours: &str) -> Figure {
        let mut f = Figure::new(number, "Title", "How.");
        f.lines.push(Line::new("case", "metric").ours(ours));
        f
    }

    #[test]
    fn rewrite_keeps_hand_written_text_and_replaces_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        write_file(&path, Some("m1\n"), &[figure(3, "first")], "quick", "d").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replace(
            "<!-- /bench:3 -->\n",
            "<!-- /bench:3 -->\nCause: written by hand.\n",
        );
        std::fs::write(&path, edited).unwrap();
        write_file(
            &path,
            Some("m2\n"),
            &[figure(3, "second"), figure(4, "new")],
            "full",
            "d",
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("Cause: written by hand."));
        assert!(text.contains("| second |") && !text.contains("| first |"));
        assert!(text.contains("m2\n") && !text.contains("m1\n"));
        assert!(text.contains("## 4. Title") && text.contains("| new |"));
        assert_eq!(text.matches("## 3. Title").count(), 1);
    }
}
