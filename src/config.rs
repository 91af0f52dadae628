//! Configuration: TOML file, `TAGSYNC_*` environment variables, flags.
//!
//! Precedence is flag > environment > file > built-in default. The file is
//! read into [`ConfigFile`] (unknown keys are errors, so a typo never falls
//! back to a default silently), environment overrides are applied to it, and
//! [`ConfigFile::validate`] turns it into [`Settings`], the only form the rest
//! of tagsync sees. Every error names the key and says what is accepted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::azure::CloudEndpoints;
use crate::azure::arm::ArmSettings;
use crate::azure::auth::{AuthMethod, AuthSettings};
use crate::feed::source::SourceSpec;
use crate::feed::{Cloud, PrefixBounds};
use crate::fit::Overflow;
use crate::http::HttpSettings;
use crate::notify::{EventKind, NotifySettings, Receiver, ReceiverAuth, ReceiverUrl};
use crate::tags::TagSelection;
use crate::targets::{ResourceId, TargetSpec, adapter_of};

/// Where the feed comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Find this week's file on Microsoft's download center.
    #[default]
    DownloadCenter,
    /// A pinned URL.
    Url,
    /// A local file.
    File,
    /// The ARM Service Tag Discovery API (needs `[azure]` credentials).
    DiscoveryApi,
}

impl SourceKind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "download-center" => Some(Self::DownloadCenter),
            "url" => Some(Self::Url),
            "file" => Some(Self::File),
            "discovery-api" => Some(Self::DiscoveryApi),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub feed: FeedSection,
    pub tags: TagsSection,
    pub database: DatabaseSection,
    pub azure: AzureSection,
    pub policy: PolicySection,
    pub targets: Vec<TargetSection>,
    pub notify: Vec<NotifySection>,
}

/// One `[[notify]]` receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    pub name: String,
    pub url: Option<String>,
    /// A file holding the URL, for URLs that carry a secret (a Slack or
    /// Teams webhook's path): read once at start, never logged.
    pub url_file: Option<PathBuf>,
    /// A file holding the HMAC-SHA256 key (a mounted Kubernetes Secret).
    pub secret_file: Option<PathBuf>,
    /// Default: all of them.
    pub events: Option<Vec<String>>,
    pub timeout: Option<HumanDuration>,
    /// `none` (default) or `entra` (a bearer token for an Event Grid topic).
    pub auth: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AzureSection {
    pub auth: AuthMethod,
    /// Overrides the cloud's Resource Manager endpoint (emulators, tests).
    pub resource_manager: Option<String>,
    /// Overrides the cloud's Entra ID authority host.
    pub authority_host: Option<String>,
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// Present only to refuse it with a clear message: secrets never live
    /// in the configuration file.
    pub client_secret: Option<toml::Value>,
    pub timeout: Option<HumanDuration>,
    pub retries: Option<u32>,
    pub retry_backoff: Option<HumanDuration>,
    /// The whole run's Azure work must end within this.
    pub deadline: Option<HumanDuration>,
    /// Targets worked on at once.
    pub concurrency: Option<usize>,
    /// Resource Manager's throttling buckets, kept by the client too.
    pub read_burst: Option<u32>,
    pub reads_per_second: Option<f64>,
    pub write_burst: Option<u32>,
    pub writes_per_second: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    pub removal_grace: HumanDuration,
    pub max_removal_ratio: f64,
    /// What to do when the tags do not fit a target's budget.
    pub overflow: Overflow,
}

impl Default for PolicySection {
    fn default() -> Self {
        Self {
            removal_grace: HumanDuration(Duration::from_secs(7 * 86400)),
            max_removal_ratio: 0.5,
            overflow: Overflow::Fail,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub name: String,
    pub resource_id: String,
    /// Overrides `[tags] select` for this target.
    pub tags: Option<Vec<String>>,
    /// Overrides `[tags] regions` for this target.
    pub regions: Option<Vec<String>>,
    #[serde(default)]
    pub ipv6: bool,
    pub max_rules: Option<usize>,
    pub removal_grace: Option<HumanDuration>,
    pub max_removal_ratio: Option<f64>,
    /// Overrides `[tags] include_unassigned`.
    pub include_unassigned: Option<bool>,
    pub overflow: Option<Overflow>,
    /// No summarized IPv4 block broader than this (default 16).
    pub summarize_min_prefix_len: Option<u8>,
    /// No summarized IPv6 block broader than this (default 48).
    pub summarize_min_prefix_len_v6: Option<u8>,
    /// Refuse if even the best summary admits more addresses than this.
    pub summarize_max_extra_addresses: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSection {
    pub source: SourceKind,
    pub cloud: Cloud,
    pub url: Option<String>,
    pub file: Option<PathBuf>,
    /// For source = "discovery-api": the subscription to ask (default
    /// AZURE_SUBSCRIPTION_ID) and the ARM location.
    pub subscription_id: Option<String>,
    pub location: Option<String>,
    pub max_bytes: ByteSize,
    pub connect_timeout: HumanDuration,
    pub timeout: HumanDuration,
    pub retries: u32,
    pub retry_backoff: HumanDuration,
    /// Base of the download center pages (`details.aspx`); tests and
    /// mirrors point it elsewhere.
    pub landing_base: String,
    /// Base of the file downloads; a link found on the page must be on it.
    pub download_base: String,
    /// A selected tag with a prefix broader than these refuses the feed.
    pub min_prefix_len_v4: u8,
    pub min_prefix_len_v6: u8,
}

impl Default for FeedSection {
    fn default() -> Self {
        Self {
            source: SourceKind::DownloadCenter,
            cloud: Cloud::Public,
            url: None,
            file: None,
            subscription_id: None,
            location: None,
            max_bytes: ByteSize(64 * 1024 * 1024),
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            timeout: HumanDuration(Duration::from_secs(60)),
            retries: 3,
            retry_backoff: HumanDuration(Duration::from_secs(1)),
            landing_base: "https://www.microsoft.com".into(),
            download_base: "https://download.microsoft.com".into(),
            min_prefix_len_v4: PrefixBounds::default().min_len_v4,
            min_prefix_len_v6: PrefixBounds::default().min_len_v6,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TagsSection {
    pub select: Vec<String>,
    pub regions: Vec<String>,
    pub include_unassigned: bool,
}

impl Default for TagsSection {
    fn default() -> Self {
        Self {
            select: vec!["AzureDigitalTwins".into()],
            regions: Vec::new(),
            include_unassigned: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    pub path: PathBuf,
    pub retention: Option<HumanDuration>,
    pub lock_timeout: HumanDuration,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from("tagsync.db"),
            retention: None,
            lock_timeout: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// A duration written as `"30s"`, `"5m"`, `"2y"` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    humantime::parse_duration(s.trim())
        .map(HumanDuration)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"30s\", \"10m\", \"2y\""))
}

/// A byte count written as a number or `"64MiB"` (B, KiB, MiB, GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
        }
    }
}

fn parse_bytes(s: &str) -> Result<ByteSize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "`{s}` is not a size; write bytes or e.g. \"64MiB\" (B, KiB, MiB, GiB)"
            ));
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(ByteSize)
        .ok_or_else(|| format!("`{s}` is not a size; write bytes or e.g. \"64MiB\""))
}

/// A configuration error: what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigFile {
    /// Reads a config file. Unknown keys, wrong types and bad values are
    /// errors naming the file, line and key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read config file {}: {e}; pass an existing file with --config or TAGSYNC_CONFIG",
                path.display()
            ))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("config file {origin}: {e}")))
    }

    /// Applies the `TAGSYNC_*` variables of the configuration file from `get`
    /// (the README's table is checked against the names it asks for).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let bad =
            |var: &str, why: String| ConfigError(format!("environment variable {var}: {why}"));
        if let Some(v) = get("TAGSYNC_FEED_SOURCE") {
            self.feed.source = SourceKind::parse(v.trim()).ok_or_else(|| {
                bad(
                    "TAGSYNC_FEED_SOURCE",
                    format!(
                        "`{v}` is not a source; use download-center, url, file or discovery-api"
                    ),
                )
            })?;
        }
        if let Some(v) = get("TAGSYNC_FEED_CLOUD") {
            self.feed.cloud = match v.trim() {
                "public" => Cloud::Public,
                "usgov" => Cloud::Usgov,
                "china" => Cloud::China,
                _ => {
                    return Err(bad(
                        "TAGSYNC_FEED_CLOUD",
                        format!("`{v}` is not a cloud; use public, usgov or china"),
                    ));
                }
            };
        }
        if let Some(v) = get("TAGSYNC_FEED_URL") {
            self.feed.url = Some(v);
        }
        if let Some(v) = get("TAGSYNC_FEED_FILE") {
            self.feed.file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TAGSYNC_FEED_LOCATION") {
            self.feed.location = Some(v);
        }
        if let Some(v) = get("TAGSYNC_FEED_MAX_BYTES") {
            self.feed.max_bytes = parse_bytes(&v).map_err(|e| bad("TAGSYNC_FEED_MAX_BYTES", e))?;
        }
        if let Some(v) = get("TAGSYNC_FEED_TIMEOUT") {
            self.feed.timeout = parse_duration(&v).map_err(|e| bad("TAGSYNC_FEED_TIMEOUT", e))?;
        }
        if let Some(v) = get("TAGSYNC_TAGS_SELECT") {
            self.tags.select = split_list(&v);
        }
        if let Some(v) = get("TAGSYNC_TAGS_REGIONS") {
            self.tags.regions = split_list(&v);
        }
        if let Some(v) = get("TAGSYNC_DATABASE_RETENTION") {
            self.database.retention =
                Some(parse_duration(&v).map_err(|e| bad("TAGSYNC_DATABASE_RETENTION", e))?);
        }
        Ok(())
    }

    /// Checks every value and builds the settings the program runs on.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let feed = self.feed;
        let source = match feed.source {
            SourceKind::DownloadCenter => {
                check_base_url("[feed] landing_base", &feed.landing_base)?;
                check_base_url("[feed] download_base", &feed.download_base)?;
                SourceSpec::DownloadCenter {
                    landing_base: feed.landing_base.trim_end_matches('/').to_owned(),
                    download_base: feed.download_base.trim_end_matches('/').to_owned(),
                }
            }
            SourceKind::Url => {
                let url = feed.url.ok_or_else(|| {
                    ConfigError(
                        "[feed] source = \"url\" needs [feed] url (or TAGSYNC_FEED_URL)".into(),
                    )
                })?;
                check_base_url("[feed] url", &url)?;
                SourceSpec::Url(url)
            }
            SourceKind::File => SourceSpec::File(feed.file.ok_or_else(|| {
                ConfigError(
                    "[feed] source = \"file\" needs [feed] file (or TAGSYNC_FEED_FILE)".into(),
                )
            })?),
            SourceKind::DiscoveryApi => {
                let subscription = feed
                    .subscription_id
                    .clone()
                    .or_else(|| std::env::var("AZURE_SUBSCRIPTION_ID").ok().filter(|v| !v.is_empty()))
                    .ok_or_else(|| {
                        ConfigError(
                            "[feed] source = \"discovery-api\" needs [feed] subscription_id (or AZURE_SUBSCRIPTION_ID)".into(),
                        )
                    })?;
                let location = feed.location.clone().ok_or_else(|| {
                    ConfigError("[feed] source = \"discovery-api\" needs [feed] location, e.g. \"westeurope\"".into())
                })?;
                let ok = |s: &str| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                };
                if !ok(&subscription) || !ok(&location) {
                    return Err(ConfigError(
                        "[feed] subscription_id and location are plain ids (letters, digits, `-`)"
                            .into(),
                    ));
                }
                SourceSpec::DiscoveryApi {
                    subscription,
                    location,
                }
            }
        };
        if !(1..=4 << 30).contains(&feed.max_bytes.0) {
            return Err(ConfigError(
                "[feed] max_bytes must be from 1 byte to 4GiB".into(),
            ));
        }
        let ms = Duration::from_millis;
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let years = |y: u64| Duration::from_secs(y * 31_557_600);
        within("[feed] timeout", feed.timeout.0, ms(1), hours(1))?;
        within(
            "[feed] connect_timeout",
            feed.connect_timeout.0,
            ms(1),
            hours(1),
        )?;
        within(
            "[feed] retry_backoff",
            feed.retry_backoff.0,
            ms(0),
            ms(600_000),
        )?;
        within(
            "[database] lock_timeout",
            self.database.lock_timeout.0,
            ms(0),
            hours(1),
        )?;
        within(
            "[policy] removal_grace",
            self.policy.removal_grace.0,
            ms(0),
            years(10),
        )?;
        if !(1..=32).contains(&feed.min_prefix_len_v4)
            || !(1..=128).contains(&feed.min_prefix_len_v6)
        {
            return Err(ConfigError(
                "[feed] min_prefix_len_v4 must be 1 to 32 and min_prefix_len_v6 1 to 128".into(),
            ));
        }
        if feed.retries > 10 {
            return Err(ConfigError(format!(
                "[feed] retries = {} is too many; use 0 to 10",
                feed.retries
            )));
        }
        let select = self.tags.select;
        if self.tags.include_unassigned && self.tags.regions.is_empty() {
            return Err(ConfigError(
                "[tags] include_unassigned adds the global tag's unassigned prefixes to a regional selection; set [tags] regions too".into(),
            ));
        }
        if select.is_empty() {
            return Err(ConfigError(
                "[tags] select is empty: name at least one service tag, e.g. [\"AzureDigitalTwins\"]".into(),
            ));
        }
        for name in select.iter().chain(&self.tags.regions) {
            if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
                return Err(ConfigError(format!(
                    "[tags]: `{name}` is not a tag or region name (empty or contains spaces)"
                )));
            }
        }
        if let Some(r) = self.database.retention
            && r.0 < Duration::from_secs(24 * 3600)
        {
            return Err(ConfigError(format!(
                "[database] retention of {} is shorter than a day; use e.g. \"2y\" or remove it to keep everything",
                humantime::format_duration(r.0)
            )));
        }
        if let Some(r) = self.database.retention {
            within("[database] retention", r.0, hours(24), years(100))?;
        }
        let mut selection = TagSelection::new(select, self.tags.regions);
        selection.include_unassigned = self.tags.include_unassigned;
        let policy = self.policy;
        if !(policy.max_removal_ratio > 0.0 && policy.max_removal_ratio <= 1.0) {
            return Err(ConfigError(format!(
                "[policy] max_removal_ratio = {} must be above 0 and at most 1",
                policy.max_removal_ratio
            )));
        }
        let mut targets: Vec<TargetSpec> = Vec::new();
        for t in self.targets {
            let at = format!("[[targets]] `{}`", t.name);
            if !is_name(&t.name) {
                return Err(ConfigError(format!(
                    "{at}: a target name is letters, digits, `-`, `_` and `.` (it names the target in the ledger, logs and metrics)"
                )));
            }
            if targets.iter().any(|o| o.name == t.name) {
                return Err(ConfigError(format!("{at}: two targets have this name")));
            }
            let resource = ResourceId::parse(&t.resource_id)
                .map_err(|e| ConfigError(format!("{at}: resource_id {e}")))?;
            let adapter = adapter_of(&resource).map_err(|e| ConfigError(format!("{at}: {e}")))?;
            if let Some(other) = targets.iter().find(|o| o.resource.same_as(&resource.id)) {
                return Err(ConfigError(format!(
                    "{at}: the same resource as target `{}`",
                    other.name
                )));
            }
            if t.max_rules == Some(0) || t.max_rules.is_some_and(|m| m > 10_000) {
                return Err(ConfigError(format!(
                    "{at}: max_rules must be between 1 and 10000"
                )));
            }
            if t.ipv6 && !adapter.accepts_ipv6() {
                return Err(ConfigError(format!(
                    "{at}: {} targets hold IPv4 rules only; remove ipv6 = true",
                    adapter.name()
                )));
            }
            if let Some(g) = t.removal_grace {
                within(&format!("{at}: removal_grace"), g.0, ms(0), years(10))?;
            }
            let ratio = t.max_removal_ratio.unwrap_or(policy.max_removal_ratio);
            if !(ratio > 0.0 && ratio <= 1.0) {
                return Err(ConfigError(format!(
                    "{at}: max_removal_ratio must be above 0 and at most 1"
                )));
            }
            let mut target_selection = TagSelection::new(
                t.tags.unwrap_or_else(|| selection.tags.clone()),
                t.regions.unwrap_or_else(|| selection.regions.clone()),
            );
            target_selection.include_unassigned =
                t.include_unassigned.unwrap_or(selection.include_unassigned);
            if target_selection.include_unassigned && target_selection.regions.is_empty() {
                return Err(ConfigError(format!(
                    "{at}: include_unassigned adds the global tag's unassigned prefixes to a regional selection; set regions too"
                )));
            }
            let v4 = t.summarize_min_prefix_len.unwrap_or(16);
            let v6 = t.summarize_min_prefix_len_v6.unwrap_or(48);
            if !(8..=32).contains(&v4) || !(16..=128).contains(&v6) {
                return Err(ConfigError(format!(
                    "{at}: summarize_min_prefix_len must be 8 to 32 and summarize_min_prefix_len_v6 16 to 128"
                )));
            }
            let fit_bounds = crate::fit::Bounds {
                min_prefix_len_v4: v4,
                min_prefix_len_v6: v6,
                max_extra_addresses: t.summarize_max_extra_addresses.map(u128::from),
            };
            if target_selection.tags.is_empty() {
                return Err(ConfigError(format!("{at}: tags is empty")));
            }
            targets.push(TargetSpec {
                name: t.name,
                resource,
                adapter,
                selection: target_selection,
                ipv6: t.ipv6,
                max_rules: t.max_rules,
                removal_grace: t.removal_grace.unwrap_or(policy.removal_grace).0,
                max_removal_ratio: ratio,
                overflow: t.overflow.unwrap_or(policy.overflow),
                fit_bounds,
            });
        }
        let azure = self.azure;
        if azure.client_secret.is_some() {
            return Err(ConfigError(
                "[azure] client_secret: secrets are never read from the configuration file; set AZURE_CLIENT_SECRET or [azure] client_secret_file (a mounted secret)".into(),
            ));
        }
        let endpoints = CloudEndpoints::of(feed.cloud);
        let resource_manager = azure.resource_manager.unwrap_or(endpoints.resource_manager);
        check_base_url("[azure] resource_manager", &resource_manager)?;
        let authority_host = azure.authority_host.unwrap_or(endpoints.authority_host);
        let concurrency = azure.concurrency.unwrap_or(8);
        if concurrency == 0 || concurrency > 64 {
            return Err(ConfigError(
                "[azure] concurrency must be between 1 and 64".into(),
            ));
        }
        let arm_timeout = azure.timeout.map_or(Duration::from_secs(30), |d| d.0);
        let arm_backoff = azure.retry_backoff.map_or(Duration::from_secs(1), |d| d.0);
        let deadline = azure.deadline.map_or(Duration::from_secs(600), |d| d.0);
        let retries = azure.retries.unwrap_or(4);
        within("[azure] timeout", arm_timeout, ms(1), ms(600_000))?;
        within("[azure] retry_backoff", arm_backoff, ms(0), ms(600_000))?;
        within("[azure] deadline", deadline, ms(1), hours(24))?;
        if retries > 10 {
            return Err(ConfigError(format!(
                "[azure] retries = {retries} is too many; use 0 to 10"
            )));
        }
        let defaults = crate::azure::ratelimit::RateLimits::default();
        let limits = crate::azure::ratelimit::RateLimits {
            read_burst: azure.read_burst.unwrap_or(defaults.read_burst),
            reads_per_second: azure.reads_per_second.unwrap_or(defaults.reads_per_second),
            write_burst: azure.write_burst.unwrap_or(defaults.write_burst),
            writes_per_second: azure
                .writes_per_second
                .unwrap_or(defaults.writes_per_second),
        };
        for (key, burst) in [
            ("read_burst", limits.read_burst),
            ("write_burst", limits.write_burst),
        ] {
            if !(1..=100_000).contains(&burst) {
                return Err(ConfigError(format!(
                    "[azure] {key} = {burst} is out of range: use 1 to 100000"
                )));
            }
        }
        for (key, rate) in [
            ("reads_per_second", limits.reads_per_second),
            ("writes_per_second", limits.writes_per_second),
        ] {
            if !(0.01..=10_000.0).contains(&rate) {
                return Err(ConfigError(format!(
                    "[azure] {key} = {rate} is out of range: use 0.01 to 10000"
                )));
            }
        }
        let azure_settings = AzureSettings {
            auth: AuthSettings {
                method: azure.auth,
                authority_host,
                client_id: azure.client_id,
                tenant_id: azure.tenant_id,
                client_secret_file: azure.client_secret_file,
            },
            arm: ArmSettings {
                resource_manager: resource_manager.trim_end_matches('/').to_owned(),
                scope: endpoints.scope,
                timeout: arm_timeout,
                retries,
                retry_backoff: arm_backoff,
                deadline,
                limits,
            },
            concurrency,
        };
        let notify = notify_settings(self.notify, &azure_settings)?;
        Ok(Settings {
            targets,
            notify,
            azure: azure_settings,
            source,
            cloud: feed.cloud,
            http: HttpSettings {
                connect_timeout: feed.connect_timeout.0,
                timeout: feed.timeout.0,
                retries: feed.retries,
                retry_backoff: feed.retry_backoff.0,
                max_bytes: feed.max_bytes.0,
            },
            selection,
            prefix_bounds: PrefixBounds {
                min_len_v4: feed.min_prefix_len_v4,
                min_len_v6: feed.min_prefix_len_v6,
            },
            db_path: self.database.path,
            retention: self.database.retention.map(|d| d.0),
            lock_timeout: self.database.lock_timeout.0,
        })
    }
}

/// A name that may label metrics and log lines: letters, digits, `-`, `_`, `.`.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Validates the `[[notify]]` receivers.
fn notify_settings(
    sections: Vec<NotifySection>,
    azure: &AzureSettings,
) -> Result<NotifySettings, ConfigError> {
    let mut receivers: Vec<Receiver> = Vec::new();
    for n in sections {
        let at = format!("[[notify]] `{}`", n.name);
        if !is_name(&n.name) {
            return Err(ConfigError(format!(
                "{at}: a receiver name is letters, digits, `-`, `_` and `.` (it names the receiver in logs and metrics)"
            )));
        }
        if receivers.iter().any(|r| r.name == n.name) {
            return Err(ConfigError(format!("{at}: two receivers have this name")));
        }
        let url = match (n.url, &n.url_file) {
            (Some(url), None) => {
                check_base_url(&format!("{at}: url"), &url)?;
                ReceiverUrl::Inline(url)
            }
            // Read at each delivery, like the signing key.
            (None, Some(path)) => ReceiverUrl::File(path.clone()),
            _ => {
                return Err(ConfigError(format!(
                    "{at}: give exactly one of url and url_file"
                )));
            }
        };
        let events = match n.events {
            None => EventKind::ALL.into_iter().collect(),
            Some(names) if names.is_empty() => {
                return Err(ConfigError(format!(
                    "{at}: events is empty; remove it to get every event, or name some"
                )));
            }
            Some(names) => names
                .iter()
                .map(|e| {
                    EventKind::parse(e).ok_or_else(|| {
                        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                        ConfigError(format!(
                            "{at}: `{e}` is not an event{}; the events are {}",
                            crate::suggest::closest(e, known.iter().copied())
                                .map(|s| format!(" (did you mean `{s}`?)"))
                                .unwrap_or_default(),
                            known.join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let timeout = n.timeout.map_or(Duration::from_secs(10), |d| d.0);
        within(
            &format!("{at}: timeout"),
            timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        let auth = match n.auth.as_deref() {
            None | Some("none") => ReceiverAuth::None,
            Some("entra") => ReceiverAuth::EntraEventGrid,
            Some(other) => {
                return Err(ConfigError(format!(
                    "{at}: auth = \"{other}\" is not known; use \"none\" or \"entra\" (an Event Grid topic)"
                )));
            }
        };
        receivers.push(Receiver {
            name: n.name,
            url,
            secret_file: n.secret_file,
            events,
            timeout,
            auth,
        });
    }
    let needs_auth = receivers
        .iter()
        .any(|r| r.auth == ReceiverAuth::EntraEventGrid);
    Ok(NotifySettings {
        receivers,
        auth: needs_auth.then(|| azure.auth.clone()),
    })
}

/// Checks a duration setting against its documented range.
fn within(key: &str, d: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if d < min || d > max {
        return Err(ConfigError(format!(
            "{key} = \"{}\" is out of range: use {} to {}",
            humantime::format_duration(d),
            if min.is_zero() {
                "0s".to_owned()
            } else {
                humantime::format_duration(min).to_string()
            },
            humantime::format_duration(max)
        )));
    }
    Ok(())
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_base_url(key: &str, url: &str) -> Result<(), ConfigError> {
    crate::http::check_url_allowed(url)
        .map(drop)
        .map_err(|why| ConfigError(format!("{key}: {why}")))
}

/// Azure access settings.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    pub auth: AuthSettings,
    pub arm: ArmSettings,
    pub concurrency: usize,
}

/// Validated settings: the only configuration the program runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub targets: Vec<TargetSpec>,
    pub notify: NotifySettings,
    pub azure: AzureSettings,
    pub source: SourceSpec,
    pub cloud: Cloud,
    pub http: HttpSettings,
    pub selection: TagSelection,
    /// The broadest prefix a selected tag may list.
    pub prefix_bounds: PrefixBounds,
    pub db_path: PathBuf,
    pub retention: Option<Duration>,
    pub lock_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let s = ConfigFile::default()
            .validate()
            .expect("defaults are valid");
        assert_eq!(s.selection.tags, vec!["AzureDigitalTwins".to_string()]);
        assert_eq!(s.db_path, PathBuf::from("tagsync.db"));
        assert_eq!(s.http.max_bytes, 64 << 20);
        assert!(matches!(s.source, SourceSpec::DownloadCenter { .. }));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = ConfigFile::parse("[feed]\nsorce = \"url\"\n", "t.toml").unwrap_err();
        assert!(err.0.contains("sorce"), "{err}");
        assert!(err.0.contains("t.toml"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let mut c = ConfigFile::parse(
            "[feed]\nsource = \"file\"\nfile = \"a.json\"\nmax_bytes = \"1MiB\"\n[tags]\nselect = [\"A\"]\n",
            "t",
        )
        .expect("valid");
        c.apply_env(|k| match k {
            "TAGSYNC_FEED_FILE" => Some("b.json".into()),
            "TAGSYNC_TAGS_SELECT" => Some("X, Y".into()),
            _ => None,
        })
        .expect("valid env");
        let s = c.validate().expect("valid");
        assert_eq!(s.source, SourceSpec::File(PathBuf::from("b.json")));
        assert_eq!(s.selection.tags, vec!["X".to_string(), "Y".to_string()]);
        assert_eq!(s.http.max_bytes, 1 << 20);
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        let err = ConfigFile::parse("[feed]\ntimeout = \"soon\"\n", "t").unwrap_err();
        assert!(err.0.contains("not a duration"), "{err}");
        let err = ConfigFile::parse("[feed]\nsource = \"url\"\n", "t")
            .expect("parses")
            .validate()
            .unwrap_err();
        assert!(err.0.contains("needs [feed] url"), "{err}");
        let err = ConfigFile::parse(
            "[feed]\nsource = \"url\"\nurl = \"http://example.com/x\"\n",
            "t",
        )
        .expect("parses")
        .validate()
        .unwrap_err();
        assert!(err.0.contains("https"), "{err}");
        let mut c = ConfigFile::default();
        let err = c
            .apply_env(|k| (k == "TAGSYNC_FEED_CLOUD").then(|| "mars".into()))
            .unwrap_err();
        assert!(err.0.contains("TAGSYNC_FEED_CLOUD"), "{err}");
    }

    #[test]
    fn every_numeric_and_duration_setting_is_bounded() {
        for (toml, key) in [
            (
                "[database]\nretention = \"100000000y\"\n",
                "[database] retention",
            ),
            ("[azure]\nretries = 4294967295\n", "[azure] retries"),
            ("[azure]\ntimeout = \"0s\"\n", "[azure] timeout"),
            ("[azure]\ndeadline = \"0s\"\n", "[azure] deadline"),
            ("[azure]\ndeadline = \"400d\"\n", "[azure] deadline"),
            ("[azure]\nretry_backoff = \"1y\"\n", "[azure] retry_backoff"),
            ("[feed]\ntimeout = \"0s\"\n", "[feed] timeout"),
            ("[feed]\nretry_backoff = \"2h\"\n", "[feed] retry_backoff"),
            ("[feed]\nmax_bytes = 0\n", "[feed] max_bytes"),
            (
                "[feed]\nmin_prefix_len_v4 = 0\n",
                "[feed] min_prefix_len_v4",
            ),
            (
                "[database]\nlock_timeout = \"2d\"\n",
                "[database] lock_timeout",
            ),
            (
                "[policy]\nremoval_grace = \"20y\"\n",
                "[policy] removal_grace",
            ),
        ] {
            let err = ConfigFile::parse(toml, "t")
                .expect("parses")
                .validate()
                .expect_err(toml);
            assert!(err.0.contains(key), "{toml}: {err}");
        }
        let ok = "[database]\nretention = \"100y\"\n[azure]\nretries = 10\ndeadline = \"24h\"\n";
        ConfigFile::parse(ok, "t")
            .expect("parses")
            .validate()
            .expect("the bounds themselves are valid");
    }
}
