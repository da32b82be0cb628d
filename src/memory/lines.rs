//! Lines as the markdown parser sees them: CommonMark's line endings (`\n`, `\r\n` and
//! a bare `\r`) for spans and line counts, and `\n` alone for the line numbers people
//! look entries up by.

/// The end of the last non-blank line in `text[from..to]`, or `from` if none.
pub(super) fn last_content_end(text: &str, from: usize, to: usize) -> usize {
    match text[from..to].trim_end().len() {
        0 => from,
        len => line_end(text, from + len),
    }
}

/// Lines as `wc -l` counts them, plus a final unterminated line; a bare `\r` ends a
/// line too, as it does for the markdown parser.
pub fn count_lines(text: &str) -> usize {
    // Byte counts rather than `split_lines`: this runs over the whole file, and over
    // every entry, per prune.
    let bytes = text.as_bytes();
    let newlines = count_byte(bytes, b'\n');
    let bare_returns = if count_byte(bytes, b'\r') > 0 {
        let inner = bytes.windows(2).filter(|w| w[0] == b'\r' && w[1] != b'\n');
        inner.count() + usize::from(bytes.ends_with(b"\r"))
    } else {
        0
    };
    let unterminated = !text.is_empty() && !text.ends_with(['\n', '\r']);
    newlines + bare_returns + usize::from(unterminated)
}

/// How many times `byte` occurs in `bytes`. Counts in `u8`s over chunks of 255 bytes,
/// which vectorizes where a `usize` count per byte does not.
pub(super) fn count_byte(bytes: &[u8], byte: u8) -> usize {
    bytes
        .chunks(255)
        .map(|chunk| usize::from(chunk.iter().fold(0u8, |n, &b| n + u8::from(b == byte))))
        .sum()
}

/// The start of the line containing byte `at`. Line endings are CommonMark's: `\n`,
/// `\r\n` and a bare `\r`, because that is where pulldown-cmark ends lines; an offset on
/// the `\n` of a `\r\n` belongs to the line that pair ends.
pub(super) fn line_start(text: &str, at: usize) -> usize {
    let at = if text[..at].ends_with('\r') && text[at..].starts_with('\n') {
        at - 1
    } else {
        at
    };
    text[..at].rfind(['\n', '\r']).map_or(0, |i| i + 1)
}

/// The end of the line containing byte `at`, past its line ending.
pub(super) fn line_end(text: &str, at: usize) -> usize {
    // Bytes, not chars: this runs once or more per line of the file.
    let bytes = text.as_bytes();
    match memchr::memchr2(b'\n', b'\r', &bytes[at..]) {
        Some(i) if bytes[at + i..].starts_with(b"\r\n") => at + i + 2,
        Some(i) => at + i + 1,
        None => text.len(),
    }
}

/// `end` moved past the rest of its line, unless it already ends one.
pub(super) fn through_line_end(text: &str, end: usize) -> usize {
    if end == 0 || text[..end].ends_with('\n') {
        end
    } else if text[..end].ends_with('\r') {
        // Past the `\n` of a `\r\n`, so a heading never ends between the two.
        end + usize::from(text[end..].starts_with('\n'))
    } else {
        line_end(text, end)
    }
}

/// The lines of `text` without their endings, split where [`line_start`] splits them;
/// like [`str::lines`], a final line ending does not start another line.
pub(super) fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = line_end(rest, 0);
        let line = &rest[..end - line_ending_len(&rest[..end])];
        rest = &rest[end..];
        Some(line)
    })
}

/// The length of the line ending at the end of `line`: 2 for `\r\n`, 1 for `\n` or
/// `\r`, 0 for none.
fn line_ending_len(line: &str) -> usize {
    if line.ends_with("\r\n") {
        2
    } else {
        usize::from(line.ends_with(['\n', '\r']))
    }
}

/// Line numbers for byte offsets that arrive in ascending order. They count `\n` only,
/// as `grep -n`, `sed` and editors in Unix mode number lines, so a stray `\r` does not
/// shift the number a person looks the entry up by.
pub(super) struct LineIndex<'a> {
    text: &'a str,
    at: usize,
    line: usize,
}

impl<'a> LineIndex<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            at: 0,
            line: 1,
        }
    }

    pub(super) fn line_of(&mut self, offset: usize) -> usize {
        if offset < self.at {
            self.at = 0;
            self.line = 1;
        }
        self.line += self.text[self.at..offset].matches('\n').count();
        self.at = offset;
        self.line
    }
}
