//! HTTP for feed downloads: one reqwest client with timeouts, retries with
//! backoff and jitter, `Retry-After`, a body size cap and conditional GET.
//!
//! Only https is allowed, except for loopback addresses (emulators, tests):
//! the feed decides which addresses get through a firewall, so it must not
//! be fetched over a channel anyone on the path can rewrite.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER};
use reqwest::{StatusCode, Url};

/// HTTP behaviour for feed downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub max_bytes: u64,
}

/// The longest `Retry-After` tagsync will sleep for before giving up.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

pub fn user_agent() -> String {
    format!("tagsync/{}", env!("CARGO_PKG_VERSION"))
}

/// A URL as it may be shown in logs and errors or stored in the history:
/// without user info and without its query, where a pinned mirror's SAS
/// token (`?sv=...&sig=...`) or a Pushgateway password would be.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("REDACTED"));
            }
            u.to_string()
        }
        Err(_) => {
            let no_query = url.split('?').next().unwrap_or_default();
            match no_query.split_once("://") {
                Some((scheme, rest)) => {
                    format!(
                        "{scheme}://{}",
                        rest.rsplit_once('@').map_or(rest, |(_, host)| host)
                    )
                }
                None => no_query.to_owned(),
            }
        }
    }
}

/// Text from upstream (an error page's first bytes, an error body, a
/// transport error) as it may be shown or stored: every URL in it redacted
/// like [`redact`], and any other `?key=value` query cut off.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')'))
            .unwrap_or(rest.len());
        // A delimiter on its own is a token of one character.
        let end = if end == 0 {
            rest.chars().next().map_or(1, char::len_utf8)
        } else {
            end
        };
        let (token, tail) = rest.split_at(end);
        if token.contains("://") {
            out.push_str(&redact(token));
        } else if let Some((path, _)) = token.split_once('?').filter(|(_, q)| q.contains('=')) {
            out.push_str(path);
            out.push_str("?REDACTED");
        } else {
            out.push_str(token);
        }
        rest = tail;
    }
    out
}

/// Checks that a URL is https, or http to a loopback address.
pub fn check_url_allowed(url: &str) -> Result<Url, String> {
    let shown = redact(url);
    let parsed = Url::parse(url).map_err(|e| format!("`{shown}` is not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(format!(
            "`{shown}` uses plain http; only https is allowed (http only for loopback addresses)"
        )),
        other => Err(format!(
            "`{shown}` uses scheme `{other}`; only https is allowed"
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
        None => false,
    }
}

/// Cache validators of a download, for conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The result of a GET.
#[derive(Debug)]
pub enum Fetch {
    Body {
        body: Vec<u8>,
        validators: Validators,
    },
    NotModified,
    /// 404 or 410: the resource is not there (discovery moves on).
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {url}: HTTP {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("GET {url}: {detail} (after {attempts} attempts)")]
    Transport {
        url: String,
        detail: String,
        attempts: u32,
    },
    #[error("GET {url}: the response is larger than the {limit} byte cap ([feed] max_bytes)")]
    TooLarge { url: String, limit: u64 },
    #[error("{0}")]
    Disallowed(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl HttpError {
    pub fn is_too_large(&self) -> bool {
        matches!(self, HttpError::TooLarge { .. })
    }
}

/// The HTTP client tagsync downloads with. The reqwest client (and with it
/// the system's root certificates, parsed when a TLS client is built) is
/// made at the first download, so a run that reads its feed from a file
/// never builds it.
#[derive(Clone)]
pub struct HttpClient {
    client: std::sync::Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>,
    settings: HttpSettings,
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Self {
        Self {
            client: Default::default(),
            settings,
        }
    }

    fn client(&self) -> Result<&reqwest::Client, HttpError> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .user_agent(user_agent())
                    .redirect(no_downgrade())
                    .connect_timeout(self.settings.connect_timeout)
                    .read_timeout(self.settings.timeout)
                    .timeout(self.settings.timeout)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| HttpError::Client(e.clone()))
    }

    /// GETs `url` with retries. With `validators`, sends `If-None-Match` /
    /// `If-Modified-Since` and returns [`Fetch::NotModified`] on 304.
    pub async fn get(
        &self,
        url: &str,
        validators: Option<&Validators>,
    ) -> Result<Fetch, HttpError> {
        self.get_capped(url, validators, self.settings.max_bytes)
            .await
    }

    /// GETs a web page (discovery), capped at 4 MiB.
    pub async fn get_page(&self, url: &str) -> Result<Option<String>, HttpError> {
        match self.get_capped(url, None, 4 << 20).await? {
            Fetch::Body { body, .. } => Ok(Some(String::from_utf8_lossy(&body).into_owned())),
            Fetch::NotModified | Fetch::NotFound => Ok(None),
        }
    }

    async fn get_capped(
        &self,
        url: &str,
        validators: Option<&Validators>,
        cap: u64,
    ) -> Result<Fetch, HttpError> {
        check_url_allowed(url).map_err(HttpError::Disallowed)?;
        let attempts = self.settings.retries + 1;
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            let wait = match self.attempt(url, validators, cap).await {
                Ok(fetch) => return Ok(fetch),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry {
                    detail,
                    retry_after,
                }) => {
                    last_error = detail;
                    retry_after.unwrap_or_else(|| backoff(self.settings.retry_backoff, attempt))
                }
            };
            if attempt < attempts {
                tracing::warn!(url = %redact(url), attempt, error = %last_error, wait_ms = wait.as_millis() as u64, "feed request failed, retrying");
                tokio::time::sleep(wait).await;
            }
        }
        Err(HttpError::Transport {
            url: redact(url),
            detail: last_error,
            attempts,
        })
    }

    async fn attempt(
        &self,
        url: &str,
        validators: Option<&Validators>,
        cap: u64,
    ) -> Result<Fetch, Attempt> {
        let mut req = self.client().map_err(Attempt::Fatal)?.get(url);
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                req = req.header(IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header(IF_MODIFIED_SINCE, lm);
            }
        }
        let mut resp = req.send().await.map_err(|e| Attempt::retry(describe(&e)))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetch::NotModified);
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Ok(Fetch::NotFound);
        }
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()))
                .map(|d| d.min(MAX_RETRY_AFTER));
            return Err(Attempt::Retry {
                detail: format!("HTTP {}", status.as_u16()),
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(Attempt::Fatal(HttpError::Status {
                url: redact(url),
                status: status.as_u16(),
                detail: status
                    .canonical_reason()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default(),
            }));
        }
        let too_large = || {
            Attempt::Fatal(HttpError::TooLarge {
                url: redact(url),
                limit: cap,
            })
        };
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(too_large());
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let validators = Validators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0).min(cap) as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > cap {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Attempt::retry(format!(
                        "reading the body: {}",
                        describe(&e)
                    )));
                }
            }
        }
        Ok(Fetch::Body { body, validators })
    }
}

enum Attempt {
    Retry {
        detail: String,
        retry_after: Option<Duration>,
    },
    Fatal(HttpError),
}

impl Attempt {
    fn retry(detail: String) -> Self {
        Attempt::Retry {
            detail,
            retry_after: None,
        }
    }
}

/// Exponential backoff with full jitter: a random wait in
/// `[base * 2^(attempt-1) / 2, base * 2^(attempt-1)]`.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
    let half = ceiling / 2;
    let jitter = random_u64() % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter)
}

/// A `Retry-After` value: delay seconds, or an HTTP date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) counted from `now`. Anything else,
/// including numbers too large for a duration, is None: the caller falls
/// back to its own backoff and bounds every wait by its deadline anyway.
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // At most a day: a larger value is an absurd answer, not a plan.
        return v
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= 86_400)
            .map(Duration::from_secs);
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, format).ok()?.assume_utc();
    let wait = at - now;
    if wait.is_negative() {
        return Some(Duration::ZERO);
    }
    Duration::try_from(wait)
        .ok()
        .filter(|d| d.as_secs() <= 86_400)
}

/// A random number from the standard library's per-process hash keys; good
/// enough to spread retries, no extra dependency.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// A reqwest error as one line with its cause chain, without the URL (the
/// callers add it once).
/// Redirects as reqwest follows them (at most 10), except from https to
/// anything that [`check_url_allowed`] refuses: a feed must never continue
/// over a channel anyone on the path can rewrite.
pub fn no_downgrade() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("more than 10 redirects");
        }
        match check_url_allowed(attempt.url().as_str()) {
            Ok(_) => attempt.follow(),
            Err(why) => attempt.error(format!("refusing the redirect: {why}")),
        }
    })
}

pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut out = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    redact_text(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_text_loses_its_secrets() {
        let page = "<html><a href=\"https://u:p@mirror.example.com/f.json?sv=1&sig=SECRET\">x</a> /f.json?sig=SECRET2 ok?";
        let shown = redact_text(page);
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("u:p@"), "{shown}");
        assert!(shown.contains("mirror.example.com/f.json"), "{shown}");
        assert!(shown.ends_with(" ok?"), "{shown}");
        assert_eq!(redact_text("plain words"), "plain words");
        assert_eq!(redact_text("\u{a0}é x\u{3000}"), "\u{a0}é x\u{3000}");
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert!(check_url_allowed("https://download.microsoft.com/x").is_ok());
        assert!(check_url_allowed("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url_allowed("http://localhost/x").is_ok());
        assert!(check_url_allowed("http://[::1]:80/x").is_ok());
        assert!(check_url_allowed("http://download.microsoft.com/x").is_err());
        assert!(check_url_allowed("http://10.0.0.1/x").is_err());
        assert!(check_url_allowed("ftp://127.0.0.1/x").is_err());
        assert!(check_url_allowed("not a url").is_err());
    }

    #[test]
    fn redaction_drops_queries_and_credentials() {
        assert_eq!(
            redact(
                "https://mirror.blob.core.windows.net/tags/ServiceTags.json?sv=2024-11-04&sig=SECRET%3D"
            ),
            "https://mirror.blob.core.windows.net/tags/ServiceTags.json?REDACTED"
        );
        assert_eq!(
            redact("http://user:hunter2@127.0.0.1:9091/"),
            "http://127.0.0.1:9091/"
        );
        assert_eq!(
            redact("https://download.microsoft.com/x.json"),
            "https://download.microsoft.com/x.json"
        );
        assert_eq!(redact("not a url?sig=SECRET"), "not a url");
        assert!(
            !check_url_allowed("http://example.com/x?sig=SECRET")
                .unwrap_err()
                .contains("SECRET")
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date_and_never_absurd() {
        let now = time::macros::datetime!(2026-12-01 08:00:00 UTC);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 08:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        for absurd in [
            "18446744073709551615",
            "99999999999999999999999",
            "86401",
            "-1",
            "1.5",
            "soon",
            "",
            "Fri, 01 Dec 2100 08:00:00 GMT",
        ] {
            assert_eq!(parse_retry_after(absurd, now), None, "{absurd}");
        }
    }

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let base = Duration::from_millis(100);
        for attempt in 1..6 {
            let ceiling = base * (1 << (attempt - 1));
            let d = backoff(base, attempt);
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
    }
}
