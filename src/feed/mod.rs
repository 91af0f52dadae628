//! The "Azure IP Ranges and Service Tags" feed: parsing and validation.
//!
//! The weekly file is over 4 MB and growing, and tagsync needs a handful of
//! its 3,000 tags. [`scan()`] streams through it keeping only the raw JSON of
//! the tags asked for; [`ScannedFeed::tag`] then parses one of those fully.
//! The same code reads the downloaded file (`changeNumber` a number) and the
//! ARM Service Tag Discovery API (`changeNumber` a string).
//!
//! Sources (download center, pinned URL, file) live in [`source`].

pub mod scan;
pub(crate) mod source;
pub(crate) mod validate;

pub use scan::{ScannedFeed, scan};

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::prefix::{HostBitsNormalized, InvalidPrefix, PrefixSet};

/// The clouds Microsoft publishes a feed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Public,
    Usgov,
    China,
}

impl Cloud {
    /// The `cloud` field a feed of this cloud carries.
    pub fn feed_name(self) -> &'static str {
        match self {
            Cloud::Public => "Public",
            Cloud::Usgov => "AzureGovernment",
            Cloud::China => "China",
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Public => "public",
            Cloud::Usgov => "usgov",
            Cloud::China => "china",
        }
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a feed body was refused. Each message names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(
        "the feed is an HTML page, not the service tags JSON (the download link probably moved): {hint}"
    )]
    Html { hint: String },
    #[error(
        "the feed is larger than the {limit} byte cap ([feed] max_bytes); refusing it. Raise max_bytes if Microsoft's file really grew that much"
    )]
    TooLarge { limit: u64 },
    #[error("could not read the feed: {detail}")]
    Read { detail: String },
    #[error("the feed is empty")]
    Empty,
    #[error(
        "the feed is truncated: the JSON ends early ({detail}); the download was probably cut off, try again"
    )]
    Truncated { detail: String },
    #[error("the feed is not valid service tags JSON: {detail}")]
    Malformed { detail: String },
    #[error("the feed's `values` list is empty: refusing a feed with no service tags")]
    NoValues,
    #[error("the feed is for cloud `{found}` but cloud `{expected}` is configured ([feed] cloud)")]
    WrongCloud { expected: String, found: String },
    #[error(
        "service tag `{tag}` is not in the feed (the feed has {tag_count} tags){suggestion}; check [tags] select, names are case-sensitive"
    )]
    MissingTag {
        tag: String,
        tag_count: usize,
        suggestion: String,
    },
    #[error(
        "service tag `{tag}` has no regional sub-tag for region `{region}`{suggestion}; regions with a sub-tag: {available}"
    )]
    NoRegionalSubtag {
        tag: String,
        region: String,
        available: String,
        suggestion: String,
    },
    #[error("service tag `{tag}` has malformed properties: {detail}")]
    BadTag { tag: String, detail: String },
    #[error(
        "the feed lists service tag `{tag}` twice; a damaged or tampered feed is not used (a real feed names each tag once)"
    )]
    DuplicateTag { tag: String },
    #[error(
        "service tag `{tag}` lists `{prefix}`, {what}; no real service tag is that broad, so the feed is probably damaged and is not used. \
         If Microsoft really publishes it, lower [feed] {key}"
    )]
    TooBroad {
        tag: String,
        prefix: String,
        what: String,
        key: &'static str,
    },
    #[error("service tag `{tag}`: {source}")]
    BadPrefix {
        tag: String,
        #[source]
        source: InvalidPrefix,
    },
}

impl ScannedFeed {
    /// Refuses a feed that names a tag twice: which of the two a reader
    /// would use is arbitrary, and a leading duplicate can replace the real
    /// tag.
    pub fn check_unique(&self) -> Result<(), FeedError> {
        let mut seen = std::collections::HashSet::with_capacity(self.tag_names.len());
        match self.tag_names.iter().find(|n| !seen.insert(n.as_str())) {
            Some(dup) => Err(FeedError::DuplicateTag { tag: dup.clone() }),
            None => Ok(()),
        }
    }
}

/// The broadest prefix a selected tag may list: anything broader is a
/// damaged feed (no real tag has anything broader than /14 or /40).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixBounds {
    pub min_len_v4: u8,
    pub min_len_v6: u8,
}

impl Default for PrefixBounds {
    fn default() -> Self {
        Self {
            min_len_v4: 12,
            min_len_v6: 32,
        }
    }
}

impl ServiceTag {
    /// Refuses a tag with a prefix broader than `bounds`.
    pub fn check_bounds(&self, bounds: PrefixBounds) -> Result<(), FeedError> {
        for net in self.prefixes.iter() {
            let (min, family, key) = match net {
                ipnet::IpNet::V4(_) => (bounds.min_len_v4, "IPv4", "min_prefix_len_v4"),
                ipnet::IpNet::V6(_) => (bounds.min_len_v6, "IPv6", "min_prefix_len_v6"),
            };
            if net.prefix_len() < min {
                let what = if net.prefix_len() == 0 {
                    format!("the whole {family} address space (every address on the Internet)")
                } else {
                    format!("broader than /{min}")
                };
                return Err(FeedError::TooBroad {
                    tag: self.name.clone(),
                    prefix: net.to_string(),
                    what,
                    key,
                });
            }
        }
        Ok(())
    }
}

/// A `changeNumber`: a number in the downloaded file, a string in the ARM API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangeNumber(pub u64);

impl<'de> Deserialize<'de> for ChangeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ChangeNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative integer or a string holding one")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ChangeNumber, E> {
                Ok(ChangeNumber(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ChangeNumber, E> {
                u64::try_from(v)
                    .map(ChangeNumber)
                    .map_err(|_| E::custom(format!("negative changeNumber {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ChangeNumber, E> {
                v.trim()
                    .parse()
                    .map(ChangeNumber)
                    .map_err(|_| E::custom(format!("changeNumber `{v}` is not a number")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
struct RawTag<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    properties: RawProperties<'a>,
}

#[derive(Deserialize)]
struct RawProperties<'a> {
    #[serde(rename = "changeNumber")]
    change_number: ChangeNumber,
    #[serde(default, borrow)]
    region: Cow<'a, str>,
    #[serde(rename = "systemService", default, borrow)]
    system_service: Cow<'a, str>,
    #[serde(rename = "addressPrefixes", borrow)]
    address_prefixes: Vec<Cow<'a, str>>,
}

/// One service tag, fully parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTag {
    pub name: String,
    /// The feed's `region` field ("" for global tags). Not always the ARM
    /// location name: see [`crate::tags::region_matches`].
    pub region: String,
    pub system_service: String,
    pub change_number: u64,
    pub prefixes: PrefixSet,
    /// Published prefixes that had host bits set, and the network used.
    pub normalized: Vec<HostBitsNormalized>,
}

impl ScannedFeed {
    /// Refuses a feed for another cloud than the configured one.
    pub fn check_cloud(&self, expected: Cloud) -> Result<(), FeedError> {
        if self.cloud.eq_ignore_ascii_case(expected.feed_name()) {
            Ok(())
        } else {
            Err(FeedError::WrongCloud {
                expected: format!("{} ({})", expected.as_str(), expected.feed_name()),
                found: self.cloud.clone(),
            })
        }
    }

    pub fn has_tag(&self, name: &str) -> bool {
        self.tag_names.iter().any(|n| n == name)
    }

    /// Parses one kept tag fully. A tag absent from the feed is an error,
    /// never "no prefixes"; the error suggests a near name when there is one.
    pub fn tag(&self, name: &str) -> Result<ServiceTag, FeedError> {
        match self.kept.iter().find(|(n, _)| n == name) {
            Some((_, raw)) => parse_tag(name, raw),
            None => Err(self.missing(name)),
        }
    }

    /// Every kept tag, parsed, in feed order.
    pub fn kept_tags(&self) -> Result<Vec<ServiceTag>, FeedError> {
        self.kept.iter().map(|(n, raw)| parse_tag(n, raw)).collect()
    }

    pub fn missing(&self, name: &str) -> FeedError {
        let suggestion = crate::suggest::closest(name, self.tag_names.iter().map(String::as_str))
            .map(|n| format!("; did you mean `{n}`?"))
            .unwrap_or_default();
        FeedError::MissingTag {
            tag: name.to_owned(),
            tag_count: self.tag_names.len(),
            suggestion,
        }
    }
}

fn parse_tag(name: &str, raw: &[u8]) -> Result<ServiceTag, FeedError> {
    let tag: RawTag = serde_json::from_slice(raw).map_err(|e| FeedError::BadTag {
        tag: name.to_owned(),
        detail: e.to_string(),
    })?;
    let props = tag.properties;
    let (prefixes, normalized) = PrefixSet::parse_all(
        props.address_prefixes.iter().map(|p| p.as_ref()),
    )
    .map_err(|source| FeedError::BadPrefix {
        tag: name.to_owned(),
        source,
    })?;
    Ok(ServiceTag {
        name: tag.name.into_owned(),
        region: props.region.into_owned(),
        system_service: props.system_service.into_owned(),
        change_number: props.change_number.0,
        prefixes,
        normalized,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{"changeNumber": 7, "cloud": "Public", "values": [
        {"name": "AzureDigitalTwins", "id": "AzureDigitalTwins", "properties": {"changeNumber": 3,
         "region": "", "regionId": 0, "platform": "Azure", "systemService": "AzureDigitalTwins",
         "addressPrefixes": ["20.36.125.120/29", "2603:1000:4::/64", "20.36.125.121/29"], "networkFeatures": null}},
        {"name": "AzureDigitalTwins.WestEurope", "id": "AzureDigitalTwins.WestEurope", "properties": {
         "changeNumber": 1, "region": "westeurope", "systemService": "AzureDigitalTwins",
         "addressPrefixes": ["20.50.0.0/29"]}}]}"#;

    #[test]
    fn parses_selected_tag_with_host_bit_warning() {
        let feed = scan(SMALL.as_bytes(), |_| true).expect("valid feed");
        assert_eq!(feed.change_number, 7);
        assert_eq!(feed.tag_names.len(), 2);
        let tag = feed.tag("AzureDigitalTwins").expect("present");
        assert_eq!(tag.change_number, 3);
        assert_eq!(
            tag.prefixes.to_lines(),
            "20.36.125.120/29\n2603:1000:4::/64"
        );
        assert_eq!(tag.normalized.len(), 1);
        let regional = feed.tag("AzureDigitalTwins.WestEurope").expect("present");
        assert_eq!(regional.region, "westeurope");
    }

    #[test]
    fn tolerates_bom_crlf_and_string_change_numbers() {
        let api = "\u{feff}{\r\n\"changeNumber\": \"63\",\r\n\"cloud\": \"Public\",\r\n\"values\": [{\"name\": \"X\", \"id\": \"X\", \"properties\": {\"changeNumber\": \"7\", \"region\": \"\", \"addressPrefixes\": [\"13.64.39.16/32\"]}}]}\r\n";
        let feed = scan(api.as_bytes(), |_| true).expect("valid feed");
        assert_eq!(feed.change_number, 63);
        assert_eq!(feed.tag("X").expect("present").change_number, 7);
    }

    #[test]
    fn refuses_what_is_not_a_feed() {
        assert!(matches!(
            scan(&b"  <!DOCTYPE html><html>"[..], |_| true),
            Err(FeedError::Html { .. })
        ));
        assert!(matches!(
            scan(&b"  \n"[..], |_| true),
            Err(FeedError::Empty)
        ));
        assert!(matches!(
            scan(&SMALL.as_bytes()[..SMALL.len() / 2], |_| true),
            Err(FeedError::Truncated { .. })
        ));
        assert!(matches!(
            scan(
                &br#"{"changeNumber": 1, "cloud": "Public", "values": []}"#[..],
                |_| true
            ),
            Err(FeedError::NoValues)
        ));
        assert!(matches!(
            scan(&br#"{"changeNumber": 1, "cloud": "Public"}"#[..], |_| true),
            Err(FeedError::Malformed { .. })
        ));
    }

    #[test]
    fn missing_tag_and_wrong_cloud_are_errors() {
        let feed = scan(SMALL.as_bytes(), |_| true).expect("valid feed");
        let err = feed.tag("azuredigitaltwins").unwrap_err();
        assert!(
            err.to_string().contains("did you mean `AzureDigitalTwins`"),
            "{err}"
        );
        assert!(feed.check_cloud(Cloud::Public).is_ok());
        assert!(matches!(
            feed.check_cloud(Cloud::China),
            Err(FeedError::WrongCloud { .. })
        ));
    }
}
