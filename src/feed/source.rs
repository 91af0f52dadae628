//! Where the feed comes from: Microsoft's download center (the weekly file
//! URL is discovered), a pinned URL, or a local file.
//!
//! Discovery tries, in order, what works in practice (FACTS.md 1): the
//! `details.aspx` page's link, the `confirmation.aspx` page's link, then the
//! fixed URL pattern for each of the last eight dates. Scrapers of that page
//! have broken before; the error lists what each strategy saw.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};
use time::{Date, Duration as TimeDuration, OffsetDateTime};

use super::{Cloud, FeedError, ScannedFeed, scan};
use crate::azure::arm::ArmClient;
use crate::digest::hex;
use crate::http::{Fetch, HttpClient, HttpError, Validators};

/// A download that was made before, for conditional GET.
/// The validated feed source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    DownloadCenter {
        landing_base: String,
        download_base: String,
    },
    Url(String),
    File(PathBuf),
    DiscoveryApi {
        subscription: String,
        location: String,
    },
}

impl SourceSpec {
    /// The source's name in the history and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            SourceSpec::DownloadCenter { .. } => "download-center",
            SourceSpec::Url(_) => "url",
            SourceSpec::File(_) => "file",
            SourceSpec::DiscoveryApi { .. } => "discovery-api",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PreviousDownload {
    pub url: String,
    pub validators: Validators,
}

/// What a source produced.
#[derive(Debug)]
pub enum Content {
    /// The server said the previously downloaded file is unchanged.
    NotModified,
    Bytes(Vec<u8>),
    File(PathBuf),
    /// The pages of the Discovery API answer, each a feed document.
    Pages(Vec<Vec<u8>>),
}

/// The feed as fetched, before parsing.
#[derive(Debug)]
pub struct Fetched {
    /// The URL or path it came from.
    pub location: String,
    /// How it was found (`details page`, `fixed URL 2026-11-16`, `file`, ...).
    pub found_by: String,
    pub validators: Validators,
    pub content: Content,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "could not find the {cloud} feed on the download center:\n{attempts}\nCheck network access to the download center, or set [feed] source = \"url\" with a pinned URL, or \"file\""
    )]
    NotFound { cloud: Cloud, attempts: String },
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("feed URL {url} returned 404 Not Found; check [feed] url")]
    UrlNotFound { url: String },
    #[error("Service Tag Discovery API: {0}")]
    Discovery(String),
    #[error("cannot read feed file {path}: {detail}")]
    File { path: String, detail: String },
}

/// The download center ids and file-name parts of each cloud.
fn cloud_download(cloud: Cloud) -> (u32, &'static str, &'static str) {
    match cloud {
        Cloud::Public => (
            56519,
            "download/7/1/D/71D86715-5596-4529-9B13-DA13A5DE5B63",
            "Public",
        ),
        Cloud::Usgov => (
            57063,
            "download/6/4/D/64DB03BF-895B-4173-A8B1-BA4AD5D4DF22",
            "AzureGovernment",
        ),
        Cloud::China => (
            57062,
            "download/9/D/0/9D03B7E2-4B80-4BF3-9B91-DA8C7D3EE9F9",
            "China",
        ),
    }
}

static LINK: LazyLock<Regex> = LazyLock::new(|| {
    // The pattern is a constant, tested below; it cannot fail to compile.
    Regex::new(r#"https?://[A-Za-z0-9.\-:\[\]]+/download/[A-Za-z0-9/\-]+/ServiceTags_([A-Za-z]+)_(\d{8})\.json"#)
        .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
});

/// Finds the newest `ServiceTags_<cloud>_YYYYMMDD.json` link on a page that
/// points into `download_base`.
pub fn find_link(page: &str, cloud: Cloud, download_base: &str) -> Option<String> {
    let (_, _, file_cloud) = cloud_download(cloud);
    LINK.captures_iter(page)
        .filter(|c| &c[1] == file_cloud)
        .filter(|c| c[0].starts_with(download_base))
        .max_by(|a, b| a[2].cmp(&b[2]))
        .map(|c| c[0].to_owned())
}

/// Fetches the feed from the configured source. `previous` enables
/// conditional GET when the same URL is downloaded again.
pub async fn fetch(
    spec: &SourceSpec,
    cloud: Cloud,
    http: &HttpClient,
    arm: Option<&ArmClient>,
    previous: Option<&PreviousDownload>,
) -> Result<Fetched, SourceError> {
    match spec {
        SourceSpec::DiscoveryApi {
            subscription,
            location,
        } => {
            let arm =
                arm.ok_or_else(|| SourceError::Discovery("no Azure client was set up".into()))?;
            discovery_pages(arm, subscription, location).await
        }
        SourceSpec::File(path) => Ok(Fetched {
            location: path.display().to_string(),
            found_by: "file".into(),
            validators: Validators::default(),
            content: Content::File(path.clone()),
        }),
        SourceSpec::Url(url) => {
            let fetched = download(http, url, previous).await?;
            match fetched {
                Some((content, validators)) => Ok(Fetched {
                    location: crate::http::redact(url),
                    found_by: "pinned url".into(),
                    validators,
                    content,
                }),
                None => Err(SourceError::UrlNotFound {
                    url: crate::http::redact(url),
                }),
            }
        }
        SourceSpec::DownloadCenter {
            landing_base,
            download_base,
        } => discover(http, cloud, landing_base, download_base, previous, today()).await,
    }
}

/// The ARM Service Tag Discovery API, every page (`nextLink`).
async fn discovery_pages(
    arm: &ArmClient,
    subscription: &str,
    location: &str,
) -> Result<Fetched, SourceError> {
    const ACTION: &str = "Microsoft.Network/locations/serviceTags/read";
    let path = format!(
        "/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/serviceTags"
    );
    let err = |e: crate::azure::arm::ArmError| SourceError::Discovery(e.to_string());
    let mut page = arm
        .get(&path, DISCOVERY_API_VERSION, ACTION)
        .await
        .map_err(err)?;
    let mut pages = Vec::new();
    loop {
        let next = page["nextLink"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_owned);
        pages.push(serde_json::to_vec(&page).map_err(|e| SourceError::Discovery(e.to_string()))?);
        match next {
            Some(_) if pages.len() >= 100 => {
                return Err(SourceError::Discovery(
                    "more than 100 pages; refusing to follow nextLink further".into(),
                ));
            }
            Some(url) => page = arm.get_url(&url, ACTION).await.map_err(err)?,
            None => break,
        }
    }
    tracing::info!(
        pages = pages.len(),
        location,
        "read the feed from the Service Tag Discovery API"
    );
    Ok(Fetched {
        location: format!("{path}?api-version={DISCOVERY_API_VERSION}"),
        found_by: format!("discovery api ({location})"),
        validators: Validators::default(),
        content: Content::Pages(pages),
    })
}

pub const DISCOVERY_API_VERSION: &str = "2024-07-01";

fn today() -> Date {
    OffsetDateTime::now_utc().date()
}

async fn download(
    http: &HttpClient,
    url: &str,
    previous: Option<&PreviousDownload>,
) -> Result<Option<(Content, Validators)>, SourceError> {
    let validators = previous
        .filter(|p| p.url == crate::http::redact(url) && !p.validators.is_empty())
        .map(|p| &p.validators);
    match http.get(url, validators).await? {
        Fetch::Body { body, validators } => Ok(Some((Content::Bytes(body), validators))),
        Fetch::NotModified => Ok(Some((
            Content::NotModified,
            validators.cloned().unwrap_or_default(),
        ))),
        Fetch::NotFound => Ok(None),
    }
}

async fn discover(
    http: &HttpClient,
    cloud: Cloud,
    landing_base: &str,
    download_base: &str,
    previous: Option<&PreviousDownload>,
    today: Date,
) -> Result<Fetched, SourceError> {
    let (id, path, file_cloud) = cloud_download(cloud);
    let mut attempts = Vec::new();
    for page in ["details", "confirmation"] {
        let page_url = format!("{landing_base}/download/{page}.aspx?id={id}");
        match http.get_page(&page_url).await {
            Ok(Some(text)) => match find_link(&text, cloud, download_base) {
                Some(link) => match download(http, &link, previous).await {
                    Ok(Some((content, validators))) => {
                        tracing::info!(url = %crate::http::redact(&link), strategy = page, "found the feed URL on the {page} page");
                        return Ok(Fetched {
                            location: link,
                            found_by: format!("{page} page"),
                            validators,
                            content,
                        });
                    }
                    Ok(None) => attempts.push(format!("- {page} page: its link {link} returned 404")),
                    Err(e) => attempts.push(format!("- {page} page: its link failed: {e}")),
                },
                None => attempts.push(format!(
                    "- {page} page {page_url}: no ServiceTags_{file_cloud}_YYYYMMDD.json link under {download_base}"
                )),
            },
            Ok(None) => attempts.push(format!("- {page} page {page_url}: 404 Not Found")),
            Err(e) => attempts.push(format!("- {page} page: {e}")),
        }
    }
    for days_back in 0..8 {
        let date = today - TimeDuration::days(days_back);
        let stamp = format!(
            "{:04}{:02}{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        );
        let url = format!("{download_base}/{path}/ServiceTags_{file_cloud}_{stamp}.json");
        match download(http, &url, previous).await {
            Ok(Some((content, validators))) => {
                tracing::info!(url = %url, strategy = "fixed-url", "found the feed at the fixed URL for {stamp}");
                return Ok(Fetched {
                    location: url,
                    found_by: format!("fixed URL for {stamp}"),
                    validators,
                    content,
                });
            }
            Ok(None) => {}
            Err(e) => {
                attempts.push(format!("- fixed URL {url}: {e}"));
                return Err(SourceError::NotFound {
                    cloud,
                    attempts: attempts.join("\n"),
                });
            }
        }
    }
    attempts.push(format!(
        "- fixed URLs {download_base}/{path}/ServiceTags_{file_cloud}_YYYYMMDD.json for the 8 days to {today}: all 404"
    ));
    Err(SourceError::NotFound {
        cloud,
        attempts: attempts.join("\n"),
    })
}

/// The feed scanned, with the digest and size of the bytes it came from.
#[derive(Debug)]
pub struct Loaded {
    pub feed: ScannedFeed,
    pub sha256: String,
    pub bytes: u64,
}

/// Scans fetched content, hashing it and enforcing the size cap on the way.
pub fn load(
    content: &Content,
    max_bytes: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<Option<Loaded>, LoadError> {
    match content {
        Content::NotModified => Ok(None),
        Content::Bytes(body) => scan_hashed(body.as_slice(), max_bytes, keep).map(Some),
        Content::File(path) => scan_hashed(open_feed_file(path)?, max_bytes, keep).map(Some),
        Content::Pages(pages) => {
            let mut hasher = Sha256::new();
            let mut bytes = 0;
            let mut scanned = Vec::with_capacity(pages.len());
            for page in pages {
                hasher.update(page);
                bytes += page.len() as u64;
                if bytes > max_bytes {
                    return Err(FeedError::TooLarge { limit: max_bytes }.into());
                }
                scanned.push(scan(page.as_slice(), &keep)?);
            }
            Ok(Some(Loaded {
                feed: merge_pages(scanned)?,
                sha256: hex(&hasher.finalize()),
                bytes,
            }))
        }
    }
}

/// Joins the pages of a paged answer into one feed: the header of the
/// first page, the tags of all, in order.
fn merge_pages(pages: Vec<ScannedFeed>) -> Result<ScannedFeed, FeedError> {
    let mut pages = pages.into_iter();
    let mut first = pages.next().ok_or(FeedError::Empty)?;
    for page in pages {
        if page.cloud != first.cloud {
            return Err(FeedError::Malformed {
                detail: format!(
                    "pages disagree on the cloud: `{}` then `{}`",
                    first.cloud, page.cloud
                ),
            });
        }
        first.tag_names.extend(page.tag_names);
        first.kept.extend(page.kept);
        first.bytes += page.bytes;
    }
    first.check_unique()?;
    Ok(first)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Feed(#[from] FeedError),
}

/// Opens a feed file. Only a regular file: opening a FIFO or a device
/// would block or never end, so they are refused before they are opened.
pub fn open_file(path: &Path) -> Result<std::fs::File, SourceError> {
    let err = |detail: String| SourceError::File {
        path: path.display().to_string(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err(
            "not a regular file (a directory, FIFO or device); pass the downloaded JSON file"
                .into(),
        ));
    }
    std::fs::File::open(path).map_err(|e| err(e.to_string()))
}

/// A feed file as JSON text: gzip files (recognised by their magic bytes,
/// whatever their name) are decompressed on the way. The size cap and the
/// digest apply to the JSON, so a file and its gzip record the same feed,
/// and a gzip bomb stops at `max_bytes`.
pub fn open_feed_file(path: &Path) -> Result<Box<dyn Read>, SourceError> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, open_file(path)?);
    let head = reader.fill_buf().map_err(|e| SourceError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::GzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Scans fetched content without computing a digest (`feed show`).
pub fn scan_content(
    content: &Content,
    max_bytes: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<ScannedFeed, LoadError> {
    let feed = match content {
        Content::NotModified => {
            return Err(FeedError::Read {
                detail: "the server answered 304 Not Modified to an unconditional request".into(),
            }
            .into());
        }
        Content::Bytes(body) => scan(MeteredReader::new(body.as_slice(), max_bytes, false), keep)?,
        Content::File(path) => scan(
            MeteredReader::new(open_feed_file(path)?, max_bytes, false),
            keep,
        )?,
        Content::Pages(_) => {
            return load(content, max_bytes, keep)?
                .map(|l| l.feed)
                .ok_or_else(|| FeedError::Empty.into());
        }
    };
    Ok(feed)
}

fn scan_hashed<R: Read>(
    reader: R,
    max_bytes: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<Loaded, LoadError> {
    let mut metered = MeteredReader::new(reader, max_bytes, true);
    let feed = scan(&mut metered, keep)?;
    // The scanner stops at the end of the JSON value and has checked that
    // only white space follows; drain so the digest covers the whole input.
    std::io::copy(&mut metered, &mut std::io::sink()).map_err(|e| FeedError::Read {
        detail: e.to_string(),
    })?;
    let sha256 = metered
        .hasher
        .map(|h| hex(&h.finalize()))
        .unwrap_or_default();
    Ok(Loaded {
        feed,
        sha256,
        bytes: metered.bytes,
    })
}

/// Counts (and optionally hashes) what passes through; refuses to read past
/// the size cap, so an oversized body is never held or parsed whole.
struct MeteredReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    bytes: u64,
    cap: u64,
}

impl<R> MeteredReader<R> {
    fn new(inner: R, cap: u64, digest: bool) -> Self {
        Self {
            inner,
            hasher: digest.then(Sha256::new),
            bytes: 0,
            cap,
        }
    }
}

impl<R: Read> Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.cap {
            return Err(std::io::Error::other(FeedError::TooLarge {
                limit: self.cap,
            }));
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_newest_link_of_the_right_cloud_on_the_right_host() {
        let page = r#"<a href="https://download.microsoft.com/download/7/1/D/71D86715-5596-4529-9B13-DA13A5DE5B63/ServiceTags_Public_20261109.json">old</a>
        <a href="https://download.microsoft.com/download/7/1/D/71D86715-5596-4529-9B13-DA13A5DE5B63/ServiceTags_Public_20261116.json">x</a>
        "https://evil.example.com/download/7/1/D/x/ServiceTags_Public_20991231.json"
        https://download.microsoft.com/download/9/D/0/9D03B7E2-4B80-4BF3-9B91-DA8C7D3EE9F9/ServiceTags_China_20261116.json"#;
        let link = find_link(page, Cloud::Public, "https://download.microsoft.com").expect("found");
        assert!(link.ends_with("ServiceTags_Public_20261116.json"), "{link}");
        let link = find_link(page, Cloud::China, "https://download.microsoft.com").expect("found");
        assert!(link.ends_with("ServiceTags_China_20261116.json"), "{link}");
        assert!(find_link(page, Cloud::Usgov, "https://download.microsoft.com").is_none());
    }

    #[test]
    fn size_cap_refuses_while_reading() {
        let body = br#"{"changeNumber": 1, "cloud": "Public", "values": [{"name": "A", "properties": {"changeNumber": 1, "addressPrefixes": []}}]}"#;
        let err = load(&Content::Bytes(body.to_vec()), 20, |_| true).unwrap_err();
        assert!(
            matches!(err, LoadError::Feed(FeedError::TooLarge { limit: 20 })),
            "{err:?}"
        );
        let ok = load(&Content::Bytes(body.to_vec()), 10_000, |_| true)
            .expect("fits")
            .expect("content");
        assert_eq!(ok.bytes, body.len() as u64);
        assert_eq!(ok.sha256.len(), 64);
    }
}
