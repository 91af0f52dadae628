//! A resumable JSON validator for the parts of the feed the scanner skips.
//!
//! The scanner extracts only the selected tags, but a feed damaged anywhere
//! must be refused, so every byte it skips goes through this: a state
//! machine over RFC 8259's grammar (structure, strings with their escapes,
//! numbers, literals, UTF-8) that can stop at the end of any window and
//! resume in the next. It is written for the feed's shape, where nearly all
//! bytes are short ASCII strings and indentation: plain string bytes and
//! runs of spaces are checked eight at a time, the items of a list of
//! strings and the members of an object with string values are taken in
//! one loop that expects each line indented as the one before (and checks
//! that it is), UTF-8 is checked sequence by sequence where a string
//! leaves ASCII; numbers and literals, rare and short, are collected and
//! checked when they end.

use super::FeedError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value is due (after `:` or `,` in a list).
    Value,
    /// Just after `[`: a value or `]`.
    ValueOrEnd,
    /// Just after `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the container's end.
    AfterValue,
    /// Inside a string; `key` when it is an object key.
    Str { key: bool },
    /// Right after a backslash in a string.
    Escape { key: bool },
    /// Inside `\uXXXX`, with this many hex digits still due.
    Unicode { key: bool, left: u8 },
    /// Inside a number or a literal (`true`, `false`, `null`).
    Scalar,
}

/// Validates one JSON container, fed in pieces.
#[derive(Debug)]
pub struct Validator {
    stack: Vec<Container>,
    state: State,
    /// The bytes of the number or literal being read.
    scalar: Vec<u8>,
    /// The first bytes of a UTF-8 sequence cut by the end of a piece, and
    /// the sequence's length.
    utf8_carry: Vec<u8>,
    utf8_need: usize,
    /// The indentation of the last list item (`[0]`) and of the last
    /// object member (`[1]`) that began a line, which the next is likely
    /// to repeat (0: none seen).
    indent: [usize; 2],
}

/// Bytes that can stand for themselves in a string and need no check:
/// printable ASCII but `"` and `\\`.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

impl Validator {
    /// A validator for the rest of a container whose opening bracket
    /// (`open`) was already consumed.
    pub fn inside(open: u8) -> Self {
        let (kind, state) = if open == b'{' {
            (Container::Object, State::KeyOrEnd)
        } else {
            (Container::Array, State::ValueOrEnd)
        };
        Self::within(kind, state)
    }

    /// A validator for the rest of an object of which one or more members
    /// were already read: a `,` and more members, or `}`, are due.
    pub fn after_member() -> Self {
        Self::within(Container::Object, State::AfterValue)
    }

    /// A validator in `state` inside one container of `kind`.
    fn within(kind: Container, state: State) -> Self {
        Self {
            stack: vec![kind],
            state,
            scalar: Vec::new(),
            utf8_carry: Vec::new(),
            utf8_need: 0,
            indent: [0; 2],
        }
    }

    /// Consumes `input`. Returns `Some(n)` when the container closed after
    /// its first `n` bytes, `None` when all of it was consumed and more is
    /// due.
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, FeedError> {
        let mut state = self.state;
        let result = self.run(input, &mut state);
        self.state = state;
        result
    }

    fn run(&mut self, input: &[u8], state: &mut State) -> Result<Option<usize>, FeedError> {
        let mut i = 0;
        let n = input.len();
        // A UTF-8 sequence cut by the end of the previous piece.
        if !self.utf8_carry.is_empty() {
            i = self.finish_utf8(input)?;
        }
        // The state is a local while the loop runs (the compiler kept
        // `*state` on the stack), written back only when the piece ends or
        // the container closes.
        let mut st = *state;
        while i < n {
            match st {
                State::Str { key } => {
                    // Plain string bytes (printable ASCII but `"` and `\`)
                    // are the bulk of the feed, and so are the lines
                    // around them: list items (`"...",` + indentation +
                    // `"`, the prefix lists) and object members (`"key":
                    // "value",` + indentation + `"`). This loop goes from
                    // one string to the next on such lines without going
                    // back through the state dispatch; anything else
                    // leaves it.
                    let mut key = key;
                    let in_array = self.stack.last() == Some(&Container::Array);
                    loop {
                        i = plain_run(input, i);
                        if i == n {
                            *state = State::Str { key };
                            return Ok(None);
                        }
                        match input[i] {
                            b'"' if key => {
                                // `": "`: the member's value is a string.
                                if input.get(i + 1..i + 4) == Some(&b": \""[..]) {
                                    key = false;
                                    i += 4;
                                    continue;
                                }
                                st = State::Colon;
                            }
                            b'"' => {
                                // `,` then white space then `"`: the next
                                // item of a list, or the next key of an
                                // object.
                                let mut j = i + 1;
                                if j < n && input[j] == b',' {
                                    j += 1;
                                    let indent = &mut self.indent[usize::from(!in_array)];
                                    if let Some(quote) = same_indent(input, j, *indent) {
                                        key = !in_array;
                                        i = quote + 1;
                                        continue;
                                    }
                                    let line = j;
                                    j = whitespace_run(input, j);
                                    if j < n && input[j] == b'"' {
                                        if input[line] == b'\n' {
                                            *indent = j - line - 1;
                                        }
                                        key = !in_array;
                                        i = j + 1;
                                        continue;
                                    }
                                }
                                st = State::AfterValue;
                            }
                            b'\\' => st = State::Escape { key },
                            b if b < 0x20 => return Err(bad("a string holds a control character")),
                            _ => {
                                i = self.utf8_sequence(input, i)?;
                                continue;
                            }
                        }
                        i += 1;
                        break;
                    }
                    continue;
                }
                State::Escape { key } => {
                    st = match input[i] {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                            State::Str { key }
                        }
                        b'u' => State::Unicode { key, left: 4 },
                        b => {
                            return Err(bad(format!(
                                "a string holds the invalid escape `\\{}`",
                                char::from(b).escape_default()
                            )));
                        }
                    };
                    i += 1;
                    continue;
                }
                State::Unicode { key, left } => {
                    if !input[i].is_ascii_hexdigit() {
                        return Err(bad("a `\\u` escape is not four hex digits"));
                    }
                    st = if left == 1 {
                        State::Str { key }
                    } else {
                        State::Unicode {
                            key,
                            left: left - 1,
                        }
                    };
                    i += 1;
                    continue;
                }
                State::Scalar => {
                    let b = input[i];
                    if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z') {
                        if self.scalar.len() > 64 {
                            return Err(bad("a number or literal is longer than 64 bytes"));
                        }
                        self.scalar.push(b);
                        i += 1;
                        continue;
                    }
                    check_scalar(&self.scalar)?;
                    self.scalar.clear();
                    st = State::AfterValue;
                    continue;
                }
                _ => {}
            }
            // Structure: skip whitespace, then one token.
            let b = input[i];
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                i = whitespace_run(input, i + 1);
                continue;
            }
            i += 1;
            match (st, b) {
                (State::Value | State::ValueOrEnd, b'{') => {
                    self.push(Container::Object)?;
                    st = State::KeyOrEnd;
                }
                (State::Value | State::ValueOrEnd, b'[') => {
                    self.push(Container::Array)?;
                    st = State::ValueOrEnd;
                }
                (State::Value | State::ValueOrEnd, b'"') => st = State::Str { key: false },
                (State::Value | State::ValueOrEnd, b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                    self.scalar.clear();
                    self.scalar.push(b);
                    st = State::Scalar;
                }
                (State::ValueOrEnd, b']') | (State::KeyOrEnd, b'}') => {
                    st = State::AfterValue;
                    if self.pop() {
                        *state = st;
                        return Ok(Some(i));
                    }
                }
                (State::KeyOrEnd | State::Key, b'"') => st = State::Str { key: true },
                (State::Colon, b':') => st = State::Value,
                (State::AfterValue, b',') => {
                    st = match self.stack.last() {
                        Some(Container::Object) => State::Key,
                        _ => State::Value,
                    };
                }
                (State::AfterValue, b'}') if self.stack.last() == Some(&Container::Object) => {
                    if self.pop() {
                        *state = st;
                        return Ok(Some(i));
                    }
                }
                (State::AfterValue, b']') if self.stack.last() == Some(&Container::Array) => {
                    if self.pop() {
                        *state = st;
                        return Ok(Some(i));
                    }
                }
                (state, b) => {
                    return Err(bad(format!(
                        "expected {} but found `{}`",
                        match state {
                            State::Value => "a value",
                            State::ValueOrEnd => "a value or `]`",
                            State::KeyOrEnd => "a key or `}`",
                            State::Key => "a key",
                            State::Colon => "`:`",
                            _ => "`,` or the end of a list or object",
                        },
                        char::from(b).escape_default()
                    )));
                }
            }
        }
        *state = st;
        Ok(None)
    }

    /// Checks the UTF-8 sequence starting at `input[i]` (a byte >= 0x80 in
    /// a string); the index after it. A sequence cut by the end of `input`
    /// is carried to the next piece.
    fn utf8_sequence(&mut self, input: &[u8], i: usize) -> Result<usize, FeedError> {
        let len = match input[i] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return Err(bad("a string is not valid UTF-8")),
        };
        if i + len > input.len() {
            // Continuation bytes that are there must still be right.
            let have = &input[i..];
            if have[1..].iter().any(|&b| b & 0xC0 != 0x80) {
                return Err(bad("a string is not valid UTF-8"));
            }
            self.utf8_carry = have.to_vec();
            self.utf8_need = len;
            return Ok(input.len());
        }
        std::str::from_utf8(&input[i..i + len]).map_err(|_| bad("a string is not valid UTF-8"))?;
        Ok(i + len)
    }

    /// Completes a carried UTF-8 sequence with the first bytes of `input`;
    /// the index after it.
    fn finish_utf8(&mut self, input: &[u8]) -> Result<usize, FeedError> {
        let missing = self.utf8_need - self.utf8_carry.len();
        let take = missing.min(input.len());
        self.utf8_carry.extend_from_slice(&input[..take]);
        if self.utf8_carry.len() < self.utf8_need {
            if self.utf8_carry[1..].iter().any(|&b| b & 0xC0 != 0x80) {
                return Err(bad("a string is not valid UTF-8"));
            }
            return Ok(take);
        }
        std::str::from_utf8(&self.utf8_carry).map_err(|_| bad("a string is not valid UTF-8"))?;
        self.utf8_carry.clear();
        Ok(take)
    }

    fn push(&mut self, c: Container) -> Result<(), FeedError> {
        if self.stack.len() >= 128 {
            return Err(bad("lists and objects are nested more than 128 deep"));
        }
        self.stack.push(c);
        Ok(())
    }

    /// Closes the innermost container; true when it was the outermost.
    fn pop(&mut self) -> bool {
        self.stack.pop();
        self.stack.is_empty()
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The index of the first byte at or after `i` that is not [`PLAIN`].
/// Eight bytes at a time (SWAR): a word holds a non-plain byte when a byte
/// has its high bit set, is below 0x20, or equals `"` or `\\`; the lowest
/// flagged byte is exact (the subtraction's borrows only run upwards).
fn plain_run(input: &[u8], mut i: usize) -> usize {
    while let Some(x) = word_at(input, i) {
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let q = x ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let bs = x ^ (ONES * u64::from(b'\\'));
        let backslash = bs.wrapping_sub(ONES) & !bs;
        let flagged = (x | below_space | quote | backslash) & HIGHS;
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while input.get(i).is_some_and(|&b| PLAIN[usize::from(b)]) {
        i += 1;
    }
    i
}

/// The eight bytes at `input[at..]` as a little-endian word, when there
/// are eight (`at` is an index into `input` or just past it, so `at + 8`
/// cannot overflow).
fn word_at(input: &[u8], at: usize) -> Option<u64> {
    let bytes = input.get(at..at + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    Some(u64::from_le_bytes(word))
}

const SPACES: u64 = ONES * b' ' as u64;

/// Whether `input[j..]` is a newline, `indent` spaces and a `"` (a list
/// item or a member on the next line, indented as the one before); the
/// index of the quote. Indentations of 1 to 16 spaces are checked with one
/// or two words.
fn same_indent(input: &[u8], j: usize, indent: usize) -> Option<usize> {
    let quote = j + 1 + indent;
    if !(1..=16).contains(&indent) || input.get(quote) != Some(&b'"') || input[j] != b'\n' {
        return None;
    }
    let spaces = if indent >= 8 {
        word_at(input, j + 1)? == SPACES && word_at(input, quote - 8)? == SPACES
    } else {
        // The first `indent` bytes of the word (little-endian: the low ones).
        let mask = (1u64 << (8 * indent)) - 1;
        (word_at(input, j + 1)? ^ SPACES) & mask == 0
    };
    spaces.then_some(quote)
}

/// The index of the first byte at or after `i` that is not JSON
/// whitespace; runs of spaces (the feed's indentation) eight at a time.
fn whitespace_run(input: &[u8], mut i: usize) -> usize {
    loop {
        while let Some(word) = word_at(input, i) {
            let not_space = word ^ SPACES;
            if not_space != 0 {
                i += (not_space.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match input.get(i) {
            Some(b' ' | b'\n' | b'\r' | b'\t') => i += 1,
            _ => return i,
        }
    }
}

/// A number or literal, as JSON writes them.
pub fn check_scalar(s: &[u8]) -> Result<(), FeedError> {
    if matches!(s, b"true" | b"false" | b"null") || is_number(s) {
        Ok(())
    } else {
        Err(bad(format!(
            "`{}` is not a JSON number or literal",
            String::from_utf8_lossy(s)
        )))
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn is_number(s: &[u8]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if s.first() == Some(&b'-') {
        i += 1;
    }
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == s.len()
}

/// Checks a whole string's raw content (between its quotes).
pub fn check_string(raw: &[u8]) -> Result<(), FeedError> {
    // Tag names and keys are plain ASCII: nothing to decode.
    if plain_run(raw, 0) == raw.len() {
        return Ok(());
    }
    let mut v = Validator::within(Container::Array, State::Str { key: false });
    let mut with_quote = Vec::with_capacity(raw.len() + 2);
    with_quote.extend_from_slice(raw);
    with_quote.extend_from_slice(b"\"]");
    match v.feed(&with_quote)? {
        Some(n) if n == with_quote.len() => Ok(()),
        _ => Err(bad("a string is not valid JSON")),
    }
}

fn bad(detail: impl Into<String>) -> FeedError {
    FeedError::Malformed {
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `doc` (a container) fed in pieces of `step` bytes.
    fn valid_in_pieces(doc: &[u8], step: usize) -> Result<usize, FeedError> {
        let mut v = Validator::inside(doc[0]);
        let mut at = 1;
        while at < doc.len() {
            let end = (at + step).min(doc.len());
            if let Some(n) = v.feed(&doc[at..end])? {
                return Ok(at + n);
            }
            at = end;
        }
        Err(bad("unterminated"))
    }

    #[test]
    fn agrees_with_serde_json_on_good_and_bad_documents() {
        let cases: &[&str] = &[
            r#"{"a": [1, -2.5e+3, 0, true, false, null, "x\u00e9\n", {}, []], "b": {"c": "d"}}"#,
            r#"["é", "\ud83d\ude00", "tab\there", 1e5, -0.0]"#,
            r#"{"a": 01}"#,
            r#"{"a": 1.}"#,
            r#"{"a": -}"#,
            r#"{"a": tru}"#,
            r#"{"a": "x\q"}"#,
            r#"{"a": "\u12g4"}"#,
            r#"{"a" 1}"#,
            r#"{"a": 1,}"#,
            r#"[1, 2,]"#,
            r#"[1 2]"#,
            r#"{"a": [1}"#,
            r#"{1: 2}"#,
            "[\"a\u{1}b\"]",
            r#"{"a": +1}"#,
            r#"[nulll]"#,
            r#"[1e]"#,
        ];
        for case in cases {
            let ours = valid_in_pieces(case.as_bytes(), 1000).is_ok();
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(case).is_ok();
            assert_eq!(ours, serde, "{case}");
            for step in 1..5 {
                assert_eq!(
                    valid_in_pieces(case.as_bytes(), step).is_ok(),
                    serde,
                    "{case} in pieces of {step}"
                );
            }
        }
    }

    /// The indentation predicted from the line before is checked in full:
    /// lists and objects whose lines change indentation, or hold something
    /// else where the spaces should be, are judged as serde_json judges
    /// them, at every cut.
    #[test]
    fn a_predicted_indentation_is_checked_not_assumed() {
        let spaces = |n: usize| " ".repeat(n);
        let mut cases = Vec::new();
        for first in [2, 4, 6, 7, 8, 10, 16, 17] {
            for (label, next) in [
                ("same", spaces(first)),
                ("one less", spaces(first - 1)),
                ("one more", spaces(first + 1)),
                ("tab", format!("{}\t", spaces(first - 1))),
                ("cr", format!("\r{}", spaces(first - 1))),
                (
                    "x in the middle",
                    format!("{}x{}", spaces(first / 2), spaces(first - first / 2 - 1)),
                ),
                ("x at the end", format!("{}x", spaces(first - 1))),
                ("nul", format!("{}\u{0}{}", spaces(1), spaces(first - 2))),
            ] {
                let item = |indent: &str| format!(",\n{indent}\"10.0.0.0/8\"");
                let list = format!(
                    "[\n{}\"1.0.0.0/8\"{}{}{}\n]",
                    spaces(first),
                    item(&spaces(first)),
                    item(&spaces(first)),
                    item(&next)
                );
                cases.push((format!("list, {first} then {label}"), list));
                let member = |indent: &str, k: &str| format!(",\n{indent}\"{k}\": \"v\"");
                let object = format!(
                    "{{\n{}\"a\": \"1\"{}{}{}\n}}",
                    spaces(first),
                    member(&spaces(first), "b"),
                    member(&spaces(first), "c"),
                    member(&next, "d")
                );
                cases.push((format!("object, {first} then {label}"), object));
            }
        }
        // A member's value that is not a string, and a key followed by
        // something else than `: "`, leave the fast path.
        cases.push((
            "number value".into(),
            "{\n  \"a\": \"1\",\n  \"b\": 2,\n  \"c\": \"3\"\n}".into(),
        ));
        cases.push((
            "x for the space".into(),
            "{\n  \"a\": \"1\",\n  \"b\":x\"2\"\n}".into(),
        ));
        cases.push((
            "no space".into(),
            "{\n  \"a\":\"1\",\n  \"b\":\"2\"\n}".into(),
        ));
        cases.push((
            "key as value".into(),
            "{\n  \"a\": \"1\",\n  \"b\": \"2\" \"c\"\n}".into(),
        ));
        cases.push((
            "colon twice".into(),
            "{\n  \"a\": \"1\",\n  \"b\": : \"2\"\n}".into(),
        ));
        cases.push(("list as object".into(), "[\n  \"a\": \"1\"\n]".into()));
        for (label, doc) in &cases {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(doc).is_ok();
            for step in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 1000] {
                assert_eq!(
                    valid_in_pieces(doc.as_bytes(), step).is_ok(),
                    serde,
                    "{label} in pieces of {step}: {doc:?}"
                );
            }
        }
        let refused = cases
            .iter()
            .filter(|(_, d)| serde_json::from_str::<serde::de::IgnoredAny>(d).is_err())
            .count();
        assert!(refused > cases.len() / 4, "{refused} of {}", cases.len());
    }

    #[test]
    fn invalid_utf8_is_refused_and_a_cut_sequence_is_not() {
        let mut doc = b"[\"a\xC3\xA9b\"]".to_vec();
        for step in 1..6 {
            assert!(valid_in_pieces(&doc, step).is_ok(), "{step}");
        }
        doc[3] = 0xFF;
        assert!(valid_in_pieces(&doc, 1000).is_err());
        assert!(valid_in_pieces(b"[\"\xC3\"]", 1).is_err());
    }

    #[test]
    fn the_word_at_a_time_runs_agree_with_the_byte_loops() {
        // Runs of every length across the 16- and 8-byte steps.
        let mut bytes: Vec<u8> = (0u8..=255).collect();
        bytes.extend_from_slice(b"        \n   \t x");
        bytes.extend_from_slice(&[b' '; 37]);
        bytes.extend_from_slice(b"\r\n\t");
        bytes.extend_from_slice(&[b' '; 21]);
        bytes.extend_from_slice(b"\"13.66.143.220/30\",\n          \"2603:1000:4::/48\"\xC3\xA9");
        for start in 0..bytes.len() {
            for end in start..bytes.len().min(start + 80) {
                let s = &bytes[..end];
                let plain = (start..s.len())
                    .find(|&i| !PLAIN[usize::from(s[i])])
                    .unwrap_or(s.len());
                assert_eq!(plain_run(s, start), plain, "{start}..{end}");
                let ws = (start..s.len())
                    .find(|&i| !matches!(s[i], b' ' | b'\n' | b'\r' | b'\t'))
                    .unwrap_or(s.len());
                assert_eq!(whitespace_run(s, start), ws, "{start}..{end}");
            }
        }
    }

    #[test]
    fn the_end_position_is_after_the_closing_bracket() {
        assert_eq!(valid_in_pieces(b"{\"a\": [1]} trailing", 3).ok(), Some(10));
    }
}
