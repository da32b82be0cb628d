//! Keys that compare entries: [`entry_key`] (the text with its whitespace runs
//! collapsed, so an entry compares equal wherever it is written) and the dedupe key a
//! prune collapses copies by (that key without a leading RFC 3339 timestamp, within one
//! section). The fast paths here are checked against their definitions in the tests.

use std::hash::{BuildHasher, Hash, Hasher};

use chrono::{DateTime, NaiveDate};

use super::Section;

/// A comparable form of an entry's text: whitespace runs collapse to one space, so an
/// entry compares equal in the memory file and in the archive whatever its indentation.
pub fn entry_key(text: &str) -> String {
    let mut key = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !key.is_empty() {
            key.push(' ');
        }
        key.push_str(word);
    }
    key
}

/// Whether two texts have the same [`entry_key`], without building either.
pub(super) fn same_key(a: &str, b: &str) -> bool {
    if is_own_key(a) && is_own_key(b) {
        return a == b;
    }
    a.split_whitespace().eq(b.split_whitespace())
}

/// The text without leading whitespace and a leading RFC 3339 timestamp token.
fn without_timestamp(text: &str) -> &str {
    let trimmed = text.trim_start();
    if let Some(len) = plain_timestamp_len(trimmed.as_bytes()) {
        // Usually one space: skipped without decoding characters.
        let rest = &trimmed[len..];
        let spaces = rest.bytes().take_while(|&b| b == b' ').count();
        return rest[spaces..].trim_start();
    }
    let token_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let (token, rest) = trimmed.split_at(token_end);
    // Every RFC 3339 date-time starts with the year's digits; skip the parse otherwise.
    if token.starts_with(|c: char| c.is_ascii_digit())
        && DateTime::parse_from_rfc3339(token).is_ok()
    {
        rest.trim_start()
    } else {
        trimmed
    }
}

/// The length of the timestamp token `text` starts with, when that token has the plain
/// shape the supervisor writes, `YYYY-MM-DDTHH:MM:SS[.digits](Z|+HH:MM|-HH:MM)`, and
/// chrono's RFC 3339 parse would accept it; `None` when only that parse can tell (any
/// other spelling: `t` or a space for `T`, `z`, a Unicode minus, a token followed by
/// non-ASCII whitespace; and fields out of the ranges checked here).
///
/// Written by hand because the parse dominated the dedupe of a large prune: it runs once
/// per entry, and chrono has no cheaper validity check. It only ever answers yes for a
/// token chrono accepts (`NaiveDate` itself judges the date, leap years included); every
/// other case goes to chrono, and `timestamp_shortcut_agrees_with_chrono` compares the
/// two on tricky tokens.
fn plain_timestamp_len(text: &[u8]) -> Option<usize> {
    let digit = |i: usize| -> Option<u32> {
        text.get(i)
            .filter(|b| b.is_ascii_digit())
            .map(|b| u32::from(b - b'0'))
    };
    let number = |at: usize| Some(digit(at)? * 10 + digit(at + 1)?);
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, b)| text.get(at) != Some(&b)) {
        return None;
    }
    let year = number(0)? * 100 + number(2)?;
    let (month, day) = (number(5)?, number(8)?);
    let (hour, minute, second) = (number(11)?, number(14)?, number(17)?);
    // A second of 60 is a leap second, which RFC 3339 (and chrono) accept at any time.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Every month of every year of four digits has 28 days; later days ask chrono.
    if !(1..=12).contains(&month)
        || day == 0
        || day > 28 && NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day).is_none()
    {
        return None;
    }
    let mut at = 19;
    if text.get(at) == Some(&b'.') {
        let digits = text[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        // chrono reads nine digits and skips the rest; longer fractions take the parse.
        if !(1..=9).contains(&digits) {
            return None;
        }
        at += 1 + digits;
    }
    match text.get(at)? {
        b'Z' => at += 1,
        b'+' | b'-' => {
            if text.get(at + 3) != Some(&b':') || number(at + 1)? > 23 || number(at + 4)? > 59 {
                return None;
            }
            at += 6;
        }
        _ => return None,
    }
    // The token ends here: at the end, or at ASCII whitespace (`char::is_whitespace`, the
    // token's end for the general path, also takes vertical tab and form feed).
    match text.get(at) {
        None => Some(at),
        Some(&b) if b.is_ascii() && char::from(b).is_whitespace() => Some(at),
        Some(_) => None,
    }
}

/// The key under which duplicates collapse: the section and the [`entry_key`] of
/// [`without_timestamp`], hashed and compared without building the key when the text
/// already is one.
pub(super) struct DedupeKey<'a> {
    section: Section,
    text: &'a str,
    /// [`is_own_key`] of `text`, computed once.
    own: bool,
}

impl<'a> DedupeKey<'a> {
    pub(super) fn new(section: Section, text: &'a str) -> Self {
        let text = without_timestamp(text);
        DedupeKey {
            section,
            text,
            own: is_own_key(text),
        }
    }
}

impl Hash for DedupeKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The key itself, hashed as a `str` either way: hashers need not be streaming,
        // so equal keys must reach the hasher cut the same way. Only keys that are not
        // their own text (several lines, extra spaces, non-ASCII) are built. The
        // section is left to `eq`: the same text in two sections is rare.
        if self.own {
            self.text.hash(state);
        } else {
            entry_key(self.text).hash(state);
        }
    }
}

impl PartialEq for DedupeKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.section == other.section
            && if self.own && other.own {
                self.text == other.text
            } else {
                same_key(self.text, other.text)
            }
    }
}

impl Eq for DedupeKey<'_> {}

/// A set of [`DedupeKey`]s, each hashed once.
///
/// foldhash rather than std's SipHash: a prune can hash every entry of a large file; its
/// seeds are random per process, so crafted entries cannot aim at collisions.
pub(super) struct KeySet<'a> {
    state: foldhash::fast::SeedableRandomState,
    keys: hashbrown::HashTable<(u64, DedupeKey<'a>)>,
}

impl Default for KeySet<'_> {
    fn default() -> Self {
        KeySet {
            state: foldhash::fast::SeedableRandomState::random(),
            keys: hashbrown::HashTable::new(),
        }
    }
}

impl<'a> KeySet<'a> {
    pub(super) fn contains(&self, key: &DedupeKey) -> bool {
        let hash = self.state.hash_one(key);
        self.keys
            .find(hash, |(h, k)| *h == hash && k == key)
            .is_some()
    }

    /// Adds `key`, which the set must not hold yet.
    pub(super) fn insert(&mut self, key: DedupeKey<'a>) {
        let hash = self.state.hash_one(&key);
        self.keys.insert_unique(hash, (hash, key), |(h, _)| *h);
    }
}

/// Whether `text` is its own [`entry_key`]: printable ASCII words joined by single
/// spaces, which is cheaper to check than `split_whitespace` is to run.
///
/// This runs once per entry of the file in a prune, where folds over bytes and pairs of
/// neighbours compiled to scalar code a byte at a time. No crate checks this property,
/// so eight bytes are tested at a time in a `u64`, each test exact per byte (no carry
/// or borrow crosses a byte); `own_key_shortcuts_agree_with_the_general_code` compares
/// it with the definition at every position of texts up to three words long.
fn is_own_key(text: &str) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    /// The high bit of each byte outside `' '..='~'`.
    fn outside(word: u64) -> u64 {
        let low = word & !HIGH;
        // For a byte below 0x80, adding 0x60 reaches its high bit from 0x20 up, adding
        // one from 0x7f up; a byte from 0x80 up is outside whatever the rest says.
        let from_space = (low + ONES * 0x60) & HIGH;
        let from_del = (low + ONES) & HIGH;
        (word & HIGH) | (!from_space & HIGH) | from_del
    }
    /// The high bit of each space.
    fn spaces(word: u64) -> u64 {
        let zero_where_space = word ^ (ONES * u64::from(b' '));
        let nonzero = ((zero_where_space & !HIGH) + !HIGH) | zero_where_space;
        !nonzero & HIGH
    }
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b' ') || bytes.last() == Some(&b' ') {
        return false;
    }
    let mut chunks = bytes.chunks_exact(8);
    // Whether the byte before the current one is a space.
    let mut after_space = false;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        let spaces = spaces(word);
        // Little-endian: byte `i + 1` is eight bits above byte `i`.
        let doubled = spaces & ((spaces << 8) | u64::from(after_space) << 7);
        if outside(word) | doubled != 0 {
            return false;
        }
        after_space = spaces >> 63 != 0;
    }
    for &byte in chunks.remainder() {
        let space = byte == b' ';
        if byte.wrapping_sub(b' ') > b'~' - b' ' || space && after_space {
            return false;
        }
        after_space = space;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::archived_entries;
    use crate::memory::format::format_entry;
    use crate::memory::test_support::SHORT_TEXTS;

    #[test]
    fn entry_key_ignores_layout_and_round_trips_through_the_archive() {
        let text = "first line\nsecond  line\n\n- nested\n  - deeper";
        let formatted = format!("## X\n{}", format_entry(text));
        let back = archived_entries(&formatted);
        assert_eq!(back, [text]);
        assert_eq!(entry_key("  a\n  b\t c "), "a b c");
        assert_eq!(
            entry_key(without_timestamp("2026-11-21T10:00:03Z  x  y")),
            "x y"
        );
    }

    #[test]
    fn own_key_shortcuts_agree_with_the_general_code() {
        let texts = SHORT_TEXTS;
        let is_own_by_definition = |text: &str| {
            text.bytes().all(|b| (b' '..=b'~').contains(&b)) && entry_key(text) == text
        };
        // Every byte class at every position of texts up to three eight-byte words long,
        // and two spaces on either side of a word boundary.
        for len in 1..=26 {
            for at in 0..len {
                for byte in ["~", "!", " ", "\u{1f}", "\u{7f}", "\t", "\u{e9}", "\u{80}"] {
                    let mut text = "x".repeat(len);
                    text.replace_range(at..=at, byte);
                    assert_eq!(is_own_key(&text), is_own_by_definition(&text), "{text:?}");
                    if at + 1 < len && byte == " " {
                        text.replace_range(at + 1..=at + 1, " ");
                        assert!(!is_own_key(&text), "{text:?}");
                    }
                }
            }
        }
        for text in texts {
            let own = is_own_key(text);
            assert_eq!(own, is_own_by_definition(text), "{text:?}");
            for other in texts {
                assert_eq!(same_key(text, other), entry_key(text) == entry_key(other));
            }
        }
    }

    /// [`without_timestamp`] by chrono alone, as it was before its shortcut.
    fn without_timestamp_by_chrono(text: &str) -> &str {
        let trimmed = text.trim_start();
        let token_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let (token, rest) = trimmed.split_at(token_end);
        if DateTime::parse_from_rfc3339(token).is_ok() {
            rest.trim_start()
        } else {
            trimmed
        }
    }

    #[test]
    fn timestamp_shortcut_agrees_with_chrono() {
        let mut tokens: Vec<String> = [
            "2026-11-21T10:00:03Z",
            "2026-11-21T10:00:03z",
            "2026-11-21t10:00:03Z",
            "2026-11-21 10:00:03Z",
            "2026-11-21T10:00:03",
            "2026-11-21T10:00:03+01:00",
            "2026-11-21T10:00:03-23:59",
            "2026-11-21T10:00:03+24:00",
            "2026-11-21T10:00:03+99:00",
            "2026-11-21T10:00:03+05:60",
            "2026-11-21T10:00:03+0500",
            "2026-11-21T10:00:03+05",
            "2026-11-21T10:00:03\u{2212}05:00",
            "2026-11-21T10:00:03.Z",
            "2026-11-21T10:00:03.5Z",
            "2026-11-21T10:00:03.123456789Z",
            "2026-11-21T10:00:03.1234567891234Z",
            "2026-11-21T10:00:03,5Z",
            "2026-11-21T10:00:60Z",
            "2026-11-21T23:59:60.999999999Z",
            "2026-11-21T23:59:61Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T23:60:00Z",
            "2026-02-29T00:00:00Z",
            "2028-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-12-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "2026-1-21T10:00:03Z",
            "2026-11-21T10:00:03ZZ",
            "2026-11-21T10:00:03Zx",
            "2026-11-21T10:00:03+01:00:00",
            "2026-11-21T10:00:03Z\u{e9}",
            "2026-11-21",
            "12345",
            "\u{661}026-11-21T10:00:03Z",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // Every field at and around its limits.
        for (at, values) in [
            (5, &["00", "01", "02", "12", "13", "99"][..]),
            (8, &["00", "01", "28", "29", "30", "31", "32"]),
            (11, &["00", "23", "24", "99"]),
            (14, &["00", "59", "60"]),
            (17, &["00", "59", "60", "61"]),
        ] {
            for month in ["02", "04", "12"] {
                for value in values {
                    let mut token = format!("2024-{month}-10T10:20:30Z").into_bytes();
                    token[at..at + 2].copy_from_slice(value.as_bytes());
                    tokens.push(String::from_utf8(token).unwrap());
                }
            }
        }
        let mut shortcuts = 0;
        for token in &tokens {
            for after in [
                "",
                " rest",
                "  rest  ",
                "\trest",
                "\nrest",
                "\u{b}rest",
                "\u{a0}rest",
                "\u{3000}rest",
                "x",
            ] {
                let text = format!("{token}{after}");
                shortcuts += usize::from(plain_timestamp_len(text.as_bytes()).is_some());
                assert_eq!(
                    without_timestamp(&text),
                    without_timestamp_by_chrono(&text),
                    "{text:?}"
                );
            }
        }
        // The shortcut decided most of the valid ones.
        assert!(shortcuts > 100, "{shortcuts}");
    }
}
