//! The child's output as lines, handed to the run's line sinks as it arrives.
//!
//! The runner reads no output format: whoever wants to know what a child said (its output
//! protocol, an agent's result) gives the run a [`LineSink`]. Rules:
//!
//! - Every line of stdout and stderr goes to every sink, in the order it was read, even past
//!   the log cap; a last line without a line ending counts. Line endings (`\n`, `\r\n`) are
//!   removed and bytes are decoded lossily as UTF-8.
//! - Memory stays bounded: a line is held up to the longest limit a sink asked for (at most
//!   the run's ceiling, see [`Lines::new`]), never more. Each sink gets a line cut to its own
//!   limit, with `cut = true`, when the line was longer.
//! - The runner keeps the start of the last non-blank line for its summary.

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The limit a sink gets unless it asks for another: protocol lines are short.
pub const DEFAULT_LINE_LIMIT: usize = 64 * 1024;
/// What the runner itself keeps of a line: its summary shows the last one, clipped.
const LAST_LINE_MAX: usize = 1024;

/// Reads a child's output line by line, as it arrives.
///
/// Only [`line`](LineSink::line) is required. The other methods let a sink ask for longer
/// lines and tell the runner, once all output is read, what the output means for the run.
pub trait LineSink: Send {
    /// One line, without its line ending, decoded lossily as UTF-8. A line longer than the
    /// runner's line limit arrives cut to that limit with `cut = true`.
    fn line(&mut self, stream: Stream, line: &str, cut: bool);

    /// The longest line, in bytes, this sink wants whole from `stream`; asked once, before
    /// the first line. The runner grants at most the run's log cap (or
    /// [`DEFAULT_LINE_LIMIT`] if that is more), so that memory stays bounded. `0`: the sink
    /// does not read `stream` at all.
    fn line_limit(&self, stream: Stream) -> usize {
        let _ = stream;
        DEFAULT_LINE_LIMIT
    }

    /// After the last line: the reason the child gave for being unable to go on, if it
    /// gave one. The run is then `blocked` (unless the runner stopped it).
    fn blocked(&self) -> Option<&str> {
        None
    }

    /// After the last line: notes for the run's summary (what the sink had to drop).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The run's two line splitters and its sinks.
pub(super) struct Lines<'r, 's> {
    stdout: LineSplitter,
    stderr: LineSplitter,
    fanout: Fanout<'r, 's>,
}

struct Fanout<'r, 's> {
    sinks: &'r mut [&'s mut dyn LineSink],
    /// Each sink's granted (stdout, stderr) limit.
    limits: Vec<(usize, usize)>,
    /// The start of the last non-blank line, trimmed.
    last_line: String,
}

impl<'r, 's> Lines<'r, 's> {
    /// `ceiling` bounds what any sink may ask for, and so the memory a line can take.
    pub(super) fn new(sinks: &'r mut [&'s mut dyn LineSink], ceiling: usize) -> Self {
        let limits: Vec<(usize, usize)> = sinks
            .iter()
            .map(|sink| {
                (
                    sink.line_limit(Stream::Stdout).min(ceiling),
                    sink.line_limit(Stream::Stderr).min(ceiling),
                )
            })
            .collect();
        let longest = |pick: fn(&(usize, usize)) -> usize| {
            limits
                .iter()
                .map(pick)
                .max()
                .unwrap_or(0)
                .max(LAST_LINE_MAX)
        };
        Lines {
            stdout: LineSplitter::new(longest(|l| l.0)),
            stderr: LineSplitter::new(longest(|l| l.1)),
            fanout: Fanout {
                sinks,
                limits,
                last_line: String::new(),
            },
        }
    }

    /// Output as read from `stream`; complete lines go to the sinks now.
    pub(super) fn feed(&mut self, stream: Stream, chunk: &[u8]) {
        let (splitter, fanout) = self.parts(stream);
        splitter.feed(chunk, |line, complete| {
            fanout.deliver(stream, line, complete)
        });
    }

    /// `stream` is closed: its unterminated last line, if any, goes to the sinks.
    pub(super) fn finish(&mut self, stream: Stream) {
        let (splitter, fanout) = self.parts(stream);
        splitter.finish(|line, complete| fanout.deliver(stream, line, complete));
    }

    fn parts(&mut self, stream: Stream) -> (&mut LineSplitter, &mut Fanout<'r, 's>) {
        let splitter = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        (splitter, &mut self.fanout)
    }

    /// The start of the last non-blank line of either stream.
    pub(super) fn last_line(&self) -> Option<&str> {
        let last = self.fanout.last_line.as_str();
        (!last.is_empty()).then_some(last)
    }
}

impl Fanout<'_, '_> {
    fn deliver(&mut self, stream: Stream, bytes: &[u8], complete: bool) {
        let text = String::from_utf8_lossy(bytes);
        let start = text.trim_start();
        let start = start[..floor_boundary(start, LAST_LINE_MAX)].trim_end();
        if !start.is_empty() {
            self.last_line.clear();
            self.last_line.push_str(start);
        }
        for (sink, &(stdout, stderr)) in self.sinks.iter_mut().zip(&self.limits) {
            let limit = match stream {
                Stream::Stdout => stdout,
                Stream::Stderr => stderr,
            };
            if limit == 0 {
                continue;
            }
            if text.len() > limit {
                sink.line(stream, &text[..floor_boundary(&text, limit)], true);
            } else {
                sink.line(stream, &text, !complete);
            }
        }
    }
}

/// The largest char boundary of `text` at or below `max` (`str::floor_char_boundary` is
/// newer than this crate's minimum Rust).
fn floor_boundary(text: &str, max: usize) -> usize {
    let mut at = max.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Splits a byte stream into lines while holding at most `max` bytes of one line.
/// Longer lines are reported once, with their first `max` bytes and `complete = false`.
struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    overlong: bool,
}

impl LineSplitter {
    fn new(max: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max,
            overlong: false,
        }
    }

    fn feed(&mut self, mut data: &[u8], mut on_line: impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let (part, newline) = match memchr::memchr(b'\n', data) {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            let room = self.max - self.buf.len();
            if part.len() > room {
                self.overlong = true;
            }
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            if newline {
                self.emit(&mut on_line);
                data = &data[part.len() + 1..];
            } else {
                data = &[];
            }
        }
    }

    fn finish(&mut self, mut on_line: impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() || self.overlong {
            self.emit(&mut on_line);
        }
    }

    fn emit(&mut self, on_line: &mut impl FnMut(&[u8], bool)) {
        let line = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
        on_line(line, !self.overlong);
        self.buf.clear();
        self.overlong = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::testing::{run_with, spec};
    use crate::runner::{RunStatus, truncation_marker};
    use tokio_util::sync::CancellationToken;

    #[test]
    fn line_splitter_caps_long_lines_and_keeps_the_tail() {
        let mut lines = LineSplitter::new(4);
        let mut seen = Vec::new();
        lines.feed(b"ab\r\ncdefgh\nij", |l, c| seen.push((l.to_vec(), c)));
        lines.feed(b"k", |l, c| seen.push((l.to_vec(), c)));
        lines.finish(|l, c| seen.push((l.to_vec(), c)));
        assert_eq!(
            seen,
            [
                (b"ab".to_vec(), true),
                (b"cdef".to_vec(), false),
                (b"ijk".to_vec(), true)
            ]
        );
    }

    /// Records every line it gets, asking for the given limits.
    struct Recorder {
        limits: (usize, usize),
        lines: Vec<(Stream, String, bool)>,
    }

    impl Recorder {
        fn new(stdout: usize, stderr: usize) -> Recorder {
            Recorder {
                limits: (stdout, stderr),
                lines: Vec::new(),
            }
        }

        /// (stream, length, first bytes, cut) of each line, for lines too long to compare.
        fn shapes(&self) -> Vec<(Stream, usize, String, bool)> {
            self.lines
                .iter()
                .map(|(s, l, c)| (*s, l.len(), l.chars().take(8).collect(), *c))
                .collect()
        }
    }

    impl LineSink for Recorder {
        fn line(&mut self, stream: Stream, line: &str, cut: bool) {
            self.lines.push((stream, line.to_owned(), cut));
        }

        fn line_limit(&self, stream: Stream) -> usize {
            match stream {
                Stream::Stdout => self.limits.0,
                Stream::Stderr => self.limits.1,
            }
        }
    }

    /// Prints, on stdout: "short", a 100 KiB line of 'a' (CRLF), an invalid UTF-8 byte, a
    /// 3 MiB line of 'b'; on stderr "err one" and "err two" between them; then "end"
    /// without a line ending.
    const SCRIPT: &str = r#"
        echo short
        echo "err one" >&2
        printf '%s\r\n' "$(head -c 102400 /dev/zero | tr '\0' a)"
        printf 'x\377y\n'
        echo "err two" >&2
        head -c 3145728 /dev/zero | tr '\0' b; echo
        printf end
    "#;

    #[tokio::test]
    async fn every_sink_gets_every_line_cut_to_its_own_limit_even_past_the_log_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), &["/bin/sh", "-c", SCRIPT]);
        s.log_cap = 1024 * 1024;
        let log_path = s.log_path.clone();
        let mut default = Recorder::new(DEFAULT_LINE_LIMIT, DEFAULT_LINE_LIMIT);
        let mut long = Recorder::new(usize::MAX, 0);
        let mut tiny = Recorder::new(3, 4);
        let outcome = run_with(
            s,
            &mut [&mut default, &mut long, &mut tiny],
            CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome.status, RunStatus::Ok, "{outcome:?}");
        assert!(outcome.truncated);
        let log = std::fs::read(&log_path).unwrap();
        assert!(log.ends_with(
            truncation_marker(1024 * 1024, outcome.output_bytes - 1024 * 1024).as_bytes()
        ));

        let (out, err) = (Stream::Stdout, Stream::Stderr);
        let stdout_lines = |limit: usize| {
            vec![
                (out, 5, "short".to_owned(), false),
                (
                    out,
                    102_400.min(limit),
                    "aaaaaaaa".to_owned(),
                    102_400 > limit,
                ),
                (out, 5, "x\u{fffd}y".to_owned(), false),
                (out, 3_145_728.min(limit), "bbbbbbbb".to_owned(), true),
                (out, 3, "end".to_owned(), false),
            ]
        };
        // The order across the two pipes depends on scheduling; within each it does not.
        let of = |r: &Recorder, stream| -> Vec<_> {
            r.shapes().into_iter().filter(|l| l.0 == stream).collect()
        };
        assert_eq!(of(&default, out), stdout_lines(DEFAULT_LINE_LIMIT));
        assert_eq!(
            of(&default, err),
            [
                (err, 7, "err one".into(), false),
                (err, 7, "err two".into(), false)
            ]
        );
        // Asking for more than the ceiling (the 1 MiB log cap) gets the ceiling; asking for
        // nothing from stderr gets nothing from it.
        assert_eq!(of(&long, out), stdout_lines(1024 * 1024));
        assert!(of(&long, err).is_empty());
        // A cut never splits a character: the replacement character takes 3 bytes.
        let tiny_out: Vec<(String, bool)> = tiny
            .lines
            .iter()
            .filter(|l| l.0 == out)
            .map(|l| (l.1.clone(), l.2))
            .collect();
        assert_eq!(
            tiny_out,
            [
                ("sho".to_owned(), true),
                ("aaa".to_owned(), true),
                ("x".to_owned(), true),
                ("bbb".to_owned(), true),
                ("end".to_owned(), false),
            ]
        );
        assert_eq!(outcome.summary, "exit 0; output truncated at 1048576 bytes");
    }

    #[tokio::test]
    async fn without_sinks_the_summary_still_names_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            &[
                "/bin/sh",
                "-c",
                // The pause keeps the two pipes' lines in order.
                "echo first; sleep 0.3; echo '  last words  ' >&2; echo; exit 4",
            ],
        );
        let outcome = run_with(s, &mut [], CancellationToken::new()).await;
        assert_eq!(outcome.summary, "exit 4: last words");
    }
}
