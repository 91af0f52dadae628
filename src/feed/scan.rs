//! A streaming scanner for the service tags feed.
//!
//! Why not `serde_json::from_slice` on the whole body: the weekly file is over
//! 4 MB and tagsync needs one or a few of its ~3,000 tags. Reading the file
//! into one buffer costs more than parsing it (fresh pages fault in), and a
//! full parse validates every one of ~140,000 strings nobody will use. This
//! scanner reads through a small reused window, walks the top level and each
//! tag's `name` exactly, and hands the raw bytes of the selected tags to
//! serde_json. Every byte it skips is validated on the way
//! ([`super::validate`]: structure, strings and their escapes, numbers,
//! literals, UTF-8), so a feed damaged anywhere, not only in the selected
//! tags, is refused.

use std::borrow::Cow;
use std::io::{self, Read};

use serde::Deserialize;

use super::{ChangeNumber, FeedError};

/// Default window size: large enough that one `read` call fetches a good
/// share of the file, small enough to stay in L2.
pub const WINDOW: usize = 64 * 1024;

/// The result of a scan: the feed's header, every tag name, and the raw JSON
/// of the tags the caller asked to keep.
#[derive(Debug, Clone)]
pub struct ScannedFeed {
    pub cloud: String,
    pub change_number: u64,
    /// Every tag name in feed order (for "did you mean" and region listings).
    pub tag_names: Vec<String>,
    /// `(name, raw JSON of the whole tag object)` for each kept tag.
    pub kept: Vec<(String, Vec<u8>)>,
    /// Bytes read from the source (after any BOM).
    pub bytes: u64,
}

/// Scans a feed from `reader`, keeping the raw JSON of every tag for which
/// `keep(name)` is true.
pub fn scan<R: Read>(reader: R, keep: impl Fn(&str) -> bool) -> Result<ScannedFeed, FeedError> {
    scan_with_window(reader, WINDOW, keep)
}

/// [`scan`] with a chosen window size (tests use tiny windows to cross every
/// token boundary).
pub fn scan_with_window<R: Read>(
    reader: R,
    window: usize,
    keep: impl Fn(&str) -> bool,
) -> Result<ScannedFeed, FeedError> {
    let mut s = Scanner {
        input: Window::new(reader, window.max(1)),
        keep: &keep,
    };
    s.feed()
}

struct Window<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    total: u64,
    started: bool,
    /// While capturing, bytes from `capture_from` in the current window (and
    /// everything already moved to `captured`) belong to the current tag.
    capturing: bool,
    capture_from: usize,
    captured: Vec<u8>,
}

impl<R: Read> Window<R> {
    fn new(reader: R, size: usize) -> Self {
        Self {
            reader,
            buf: vec![0; size],
            pos: 0,
            end: 0,
            eof: false,
            total: 0,
            started: false,
            capturing: false,
            capture_from: 0,
            captured: Vec::new(),
        }
    }

    /// Makes at least one byte available; false at end of input.
    fn fill(&mut self) -> Result<bool, FeedError> {
        if self.pos < self.end {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        if self.capturing {
            self.captured
                .extend_from_slice(&self.buf[self.capture_from..self.end]);
            self.capture_from = 0;
        }
        loop {
            match self.reader.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    self.pos = 0;
                    self.end = 0;
                    return Ok(false);
                }
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    self.total += n as u64;
                    if !self.started {
                        self.started = true;
                        self.skip_bom()?;
                    }
                    if self.pos < self.end {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
    }

    /// A UTF-8 BOM may be split across the first reads of a tiny window.
    fn skip_bom(&mut self) -> Result<(), FeedError> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        let mut matched = 0;
        while matched < BOM.len() {
            if self.pos == self.end {
                match self.reader.read(&mut self.buf) {
                    Ok(0) => {
                        // The input is one or two bytes of a BOM and nothing
                        // else: not a feed.
                        return Err(FeedError::Malformed {
                            detail: "the input is only a partial byte order mark".into(),
                        });
                    }
                    Ok(n) => {
                        self.pos = 0;
                        self.end = n;
                        self.total += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(e)),
                }
            }
            if self.buf[self.pos] != BOM[matched] {
                if matched == 0 {
                    return Ok(());
                }
                return Err(FeedError::Malformed {
                    detail: "the input starts with a broken byte order mark".into(),
                });
            }
            matched += 1;
            self.pos += 1;
            self.total -= 1;
        }
        Ok(())
    }

    fn peek(&mut self) -> Result<Option<u8>, FeedError> {
        Ok(if self.fill()? {
            Some(self.buf[self.pos])
        } else {
            None
        })
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    fn next_non_ws(&mut self) -> Result<Option<u8>, FeedError> {
        loop {
            if !self.fill()? {
                return Ok(None);
            }
            let rest = &self.buf[self.pos..self.end];
            match rest
                .iter()
                .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
            {
                Some(i) => {
                    self.pos += i;
                    return Ok(Some(self.buf[self.pos]));
                }
                None => self.pos = self.end,
            }
        }
    }

    fn expect(&mut self, want: u8, what: &str) -> Result<(), FeedError> {
        match self.next_non_ws()? {
            Some(b) if b == want => {
                self.bump();
                Ok(())
            }
            Some(b) => Err(malformed(format!(
                "expected {what} but found `{}`",
                char::from(b).escape_default()
            ))),
            None => Err(truncated(what)),
        }
    }

    /// Reads a string whose opening quote was consumed; returns its raw
    /// bytes between the quotes (escapes not decoded).
    fn read_raw_string(&mut self, out: &mut Vec<u8>) -> Result<(), FeedError> {
        out.clear();
        loop {
            if !self.fill()? {
                return Err(truncated("the end of a string"));
            }
            let rest = &self.buf[self.pos..self.end];
            match memchr::memchr2(b'"', b'\\', rest) {
                Some(i) if rest[i] == b'"' => {
                    out.extend_from_slice(&rest[..i]);
                    self.pos += i + 1;
                    return super::validate::check_string(out);
                }
                Some(i) => {
                    out.extend_from_slice(&rest[..=i]);
                    self.pos += i + 1;
                    if !self.fill()? {
                        return Err(truncated("the end of a string"));
                    }
                    out.push(self.buf[self.pos]);
                    self.pos += 1;
                }
                None => {
                    out.extend_from_slice(rest);
                    self.pos = self.end;
                }
            }
        }
    }

    /// Reads a number or literal at the current position.
    fn read_scalar(&mut self, out: &mut Vec<u8>) -> Result<(), FeedError> {
        out.clear();
        while let Some(b) = self.peek()? {
            if matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                return Ok(());
            }
            out.push(b);
            self.bump();
        }
        Ok(())
    }

    /// Skips the rest of a container whose opening bracket was consumed,
    /// validating it.
    fn skip_container(&mut self, open: u8) -> Result<(), FeedError> {
        self.skip_with(super::validate::Validator::inside(open))
    }

    /// Skips the rest of an object whose first members were read,
    /// validating it.
    fn skip_rest_of_object(&mut self) -> Result<(), FeedError> {
        self.skip_with(super::validate::Validator::after_member())
    }

    fn skip_with(&mut self, mut v: super::validate::Validator) -> Result<(), FeedError> {
        loop {
            if !self.fill()? {
                return Err(truncated("the end of a list or object"));
            }
            match v.feed(&self.buf[self.pos..self.end])? {
                Some(n) => {
                    self.pos += n;
                    return Ok(());
                }
                None => self.pos = self.end,
            }
        }
    }

    /// Skips any JSON value at the current position.
    fn skip_value(&mut self, scratch: &mut Vec<u8>) -> Result<(), FeedError> {
        match self.next_non_ws()? {
            Some(b'{') => {
                self.bump();
                self.skip_container(b'{')
            }
            Some(b'[') => {
                self.bump();
                self.skip_container(b'[')
            }
            Some(b'"') => {
                self.bump();
                self.read_raw_string(scratch)
            }
            Some(_) => {
                self.read_scalar(scratch)?;
                super::validate::check_scalar(scratch)
            }
            None => Err(truncated("a value")),
        }
    }

    fn start_capture(&mut self) {
        self.capturing = true;
        self.capture_from = self.pos;
        self.captured.clear();
    }

    fn stop_capture(&mut self) -> Vec<u8> {
        if self.capturing {
            self.captured
                .extend_from_slice(&self.buf[self.capture_from..self.pos]);
        }
        self.capturing = false;
        std::mem::take(&mut self.captured)
    }

    fn drop_capture(&mut self) {
        self.capturing = false;
        self.captured.clear();
    }
}

struct Scanner<'k, R> {
    input: Window<R>,
    keep: &'k dyn Fn(&str) -> bool,
}

impl<R: Read> Scanner<'_, R> {
    fn feed(&mut self) -> Result<ScannedFeed, FeedError> {
        match self.input.next_non_ws()? {
            None => return Err(FeedError::Empty),
            Some(b'<') => return Err(self.html_error()),
            Some(b'{') => self.input.bump(),
            Some(b) => {
                return Err(malformed(format!(
                    "expected a JSON object but the body starts with `{}`",
                    char::from(b).escape_default()
                )));
            }
        }
        let mut cloud = None;
        let mut change_number = None;
        let mut values = None;
        let mut key = Vec::new();
        let mut scratch = Vec::new();
        let mut first = true;
        loop {
            match self.input.next_non_ws()? {
                Some(b'}') => {
                    self.input.bump();
                    break;
                }
                Some(b',') if !first => {
                    self.input.bump();
                }
                Some(_) if first => {}
                Some(b) => {
                    return Err(malformed(format!(
                        "expected `,` or `}}` after a top-level field, found `{}`",
                        char::from(b).escape_default()
                    )));
                }
                None => return Err(truncated("the end of the feed object")),
            }
            first = false;
            self.input.expect(b'"', "a field name")?;
            self.input.read_raw_string(&mut key)?;
            self.input.expect(b':', "`:`")?;
            match key.as_slice() {
                b"changeNumber" => {
                    change_number = Some(self.change_number(&mut scratch)?);
                }
                b"cloud" => {
                    self.input.expect(b'"', "the cloud name")?;
                    self.input.read_raw_string(&mut scratch)?;
                    cloud = Some(decode_string(&scratch)?);
                }
                b"values" => values = Some(self.values()?),
                _ => self.input.skip_value(&mut scratch)?,
            }
        }
        if let Some(b) = self.input.next_non_ws()? {
            return Err(malformed(format!(
                "unexpected `{}` after the end of the feed object",
                char::from(b).escape_default()
            )));
        }
        let (tag_names, kept) = values.ok_or_else(|| malformed("missing field `values`".into()))?;
        if tag_names.is_empty() {
            return Err(FeedError::NoValues);
        }
        let feed = ScannedFeed {
            cloud: cloud.ok_or_else(|| malformed("missing field `cloud`".into()))?,
            change_number: change_number
                .ok_or_else(|| malformed("missing field `changeNumber`".into()))?,
            tag_names,
            kept,
            bytes: self.input.total,
        };
        feed.check_unique()?;
        Ok(feed)
    }

    fn html_error(&mut self) -> FeedError {
        let mut head = Vec::new();
        while head.len() < 80 {
            match self.input.peek() {
                Ok(Some(b)) => {
                    head.push(b);
                    self.input.bump();
                }
                _ => break,
            }
        }
        let hint = crate::http::redact_text(
            &String::from_utf8_lossy(&head)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        );
        FeedError::Html { hint }
    }

    fn change_number(&mut self, scratch: &mut Vec<u8>) -> Result<u64, FeedError> {
        let json: Cow<[u8]> = match self.input.next_non_ws()? {
            Some(b'"') => {
                self.input.bump();
                self.input.read_raw_string(scratch)?;
                let mut quoted = Vec::with_capacity(scratch.len() + 2);
                quoted.push(b'"');
                quoted.extend_from_slice(scratch);
                quoted.push(b'"');
                Cow::Owned(quoted)
            }
            Some(_) => {
                self.input.read_scalar(scratch)?;
                Cow::Borrowed(scratch.as_slice())
            }
            None => return Err(truncated("the changeNumber")),
        };
        serde_json::from_slice::<ChangeNumber>(&json)
            .map(|c| c.0)
            .map_err(|e| malformed(format!("top-level changeNumber: {e}")))
    }

    #[allow(clippy::type_complexity)]
    fn values(&mut self) -> Result<(Vec<String>, Vec<(String, Vec<u8>)>), FeedError> {
        self.input.expect(b'[', "`[` opening the `values` list")?;
        let mut names = Vec::with_capacity(4096);
        let mut kept = Vec::new();
        let mut key = Vec::new();
        let mut raw_name = Vec::new();
        loop {
            match self.input.next_non_ws()? {
                Some(b']') => {
                    self.input.bump();
                    return Ok((names, kept));
                }
                Some(b',') if !names.is_empty() => self.input.bump(),
                Some(b'{') if names.is_empty() => {}
                Some(b) => {
                    return Err(malformed(format!(
                        "`values` item {} is not an object (found `{}`)",
                        names.len(),
                        char::from(b).escape_default()
                    )));
                }
                None => return Err(truncated("the end of the `values` list")),
            }
            if self.input.next_non_ws()? != Some(b'{') {
                return Err(malformed(format!(
                    "`values` item {} is not an object",
                    names.len()
                )));
            }
            self.input.start_capture();
            self.input.bump();
            // Fast path: every real feed writes `name` first.
            let mut name = None;
            let mut first_member = false;
            if self.input.next_non_ws()? == Some(b'"') {
                first_member = true;
                self.input.bump();
                self.input.read_raw_string(&mut key)?;
                if key == b"name" {
                    self.input.expect(b':', "`:`")?;
                    self.input.expect(b'"', "the tag name string")?;
                    self.input.read_raw_string(&mut raw_name)?;
                    name = Some(decode_string(&raw_name)?);
                } else {
                    self.input.expect(b':', "`:`")?;
                    self.input.skip_value(&mut raw_name)?;
                }
            }
            match name {
                Some(name) if !(self.keep)(&name) => {
                    self.input.drop_capture();
                    self.input.skip_rest_of_object()?;
                    names.push(name);
                }
                Some(name) => {
                    self.input.skip_rest_of_object()?;
                    kept.push((name.clone(), self.input.stop_capture()));
                    names.push(name);
                }
                None => {
                    // Unusual key order or an empty object: capture it whole
                    // and let serde_json find the name.
                    if first_member {
                        self.input.skip_rest_of_object()?;
                    } else if self.input.next_non_ws()? == Some(b'}') {
                        self.input.bump();
                    } else {
                        self.input.skip_container(b'{')?;
                    }
                    let raw = self.input.stop_capture();
                    #[derive(Deserialize)]
                    struct NameOnly<'a> {
                        #[serde(borrow)]
                        name: Cow<'a, str>,
                    }
                    let parsed: NameOnly = serde_json::from_slice(&raw)
                        .map_err(|e| malformed(format!("`values` item {}: {e}", names.len())))?;
                    let name = parsed.name.into_owned();
                    if (self.keep)(&name) {
                        kept.push((name.clone(), raw));
                    }
                    names.push(name);
                }
            }
        }
    }
}

fn decode_string(raw: &[u8]) -> Result<String, FeedError> {
    if !raw.contains(&b'\\') {
        return String::from_utf8(raw.to_vec())
            .map_err(|_| malformed("a string is not valid UTF-8".into()));
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).map_err(|e| malformed(format!("bad string escape: {e}")))
}

fn malformed(detail: String) -> FeedError {
    FeedError::Malformed { detail }
}

fn truncated(what: &str) -> FeedError {
    FeedError::Truncated {
        detail: format!("the input ended while expecting {what}"),
    }
}

fn read_error(e: io::Error) -> FeedError {
    // Readers layered on top (the size cap) report their refusals as io
    // errors carrying a FeedError; pass those through unchanged.
    if e.get_ref().is_some_and(|inner| inner.is::<FeedError>()) {
        if let Some(Ok(fe)) = e.into_inner().map(|inner| inner.downcast::<FeedError>()) {
            return *fe;
        }
        return FeedError::Read {
            detail: "read failed".into(),
        };
    }
    FeedError::Read {
        detail: e.to_string(),
    }
}
