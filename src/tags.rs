//! Tag selection: which service tags of the feed tagsync follows.
//!
//! A selection names tags exactly (`AzureDigitalTwins`,
//! `AzureDigitalTwins.WestEurope`) and may narrow each of them to regions
//! (`regions = ["westeurope"]`), which picks the regional sub-tags
//! `<Tag>.<Region>` instead of the global tag.
//!
//! Region names: the sub-tag's name suffix is the ARM location name
//! (`AzureDigitalTwins.FranceCentral`) but its `region` field is sometimes
//! the feed's own spelling (`centralfrance`, `brazilse`, `usstagee`). A
//! wanted region matches either, case-insensitively, so users can write the
//! location name they know.

use crate::feed::{FeedError, ScannedFeed, ServiceTag};
use crate::prefix::PrefixSet;

/// One tag as recorded in a run: what targets are planned from.
#[derive(Debug, Clone)]
pub struct TagState {
    pub name: String,
    pub region: String,
    pub change_number: u64,
    pub prefixes: PrefixSet,
}

/// What to follow, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSelection {
    /// Tag names, exact and case-sensitive as in the feed.
    pub tags: Vec<String>,
    /// When non-empty, each tag in `tags` is replaced by its sub-tags for
    /// these regions (ARM location names or the feed's spelling).
    pub regions: Vec<String>,
    /// With regions: also the global tag's prefixes that no sub-tag carries,
    /// so a regional selection never silently misses addresses Microsoft has
    /// not assigned to a region yet.
    pub include_unassigned: bool,
}

impl TagSelection {
    pub fn new(tags: Vec<String>, regions: Vec<String>) -> Self {
        Self {
            tags,
            regions,
            include_unassigned: false,
        }
    }

    /// Whether the scanner must keep a tag's JSON to resolve this selection.
    pub fn wants(&self, name: &str) -> bool {
        self.tags.iter().any(|t| {
            name == t
                || (!self.regions.is_empty()
                    && name.len() > t.len() + 1
                    && name.starts_with(t.as_str())
                    && name.as_bytes()[t.len()] == b'.')
        })
    }

    /// Resolves the selection against a scanned feed: the selected tags,
    /// fully parsed, sorted by name. Every named tag must exist, and every
    /// region must have a sub-tag of every named tag.
    pub fn resolve(&self, feed: &ScannedFeed) -> Result<Vec<ServiceTag>, FeedError> {
        let mut out = Vec::new();
        for base in &self.tags {
            if !feed.has_tag(base) {
                return Err(feed.missing(base));
            }
            if self.regions.is_empty() {
                out.push(feed.tag(base)?);
                continue;
            }
            let subtags = regional_subtags(feed, base)?;
            for wanted in &self.regions {
                let found: Vec<&ServiceTag> = subtags
                    .iter()
                    .filter(|t| region_matches(base, &t.name, &t.region, wanted))
                    .collect();
                if found.is_empty() {
                    let mut known: Vec<String> = subtags
                        .iter()
                        .map(|t| subtag_location(base, &t.name))
                        .collect();
                    known.sort();
                    return Err(FeedError::NoRegionalSubtag {
                        tag: base.clone(),
                        region: wanted.clone(),
                        available: known.join(", "),
                    });
                }
                out.extend(found.into_iter().cloned());
            }
            if self.include_unassigned {
                // The global tag and every sub-tag: what none carries is
                // computed from them (see [`unassigned`]).
                out.push(feed.tag(base)?);
                out.extend(subtags.iter().cloned());
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }
}

/// The sub-tags `<base>.<Region>` of `base` in the feed, parsed.
pub fn regional_subtags(feed: &ScannedFeed, base: &str) -> Result<Vec<ServiceTag>, FeedError> {
    let prefix = format!("{base}.");
    feed.kept
        .iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .map(|(name, _)| feed.tag(name))
        .collect()
}

/// The ARM location a sub-tag stands for, from its name
/// (`AzureDigitalTwins.FranceCentral` -> `francecentral`).
pub fn subtag_location(base: &str, name: &str) -> String {
    name.strip_prefix(base)
        .and_then(|s| s.strip_prefix('.'))
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// Whether a sub-tag of `base` is the one for region `wanted`: its name
/// suffix (the ARM location) or its `region` field (the feed's spelling).
pub fn region_matches(base: &str, name: &str, region: &str, wanted: &str) -> bool {
    let wanted = normalize_region(wanted);
    normalize_region(&subtag_location(base, name)) == wanted
        || (!region.is_empty() && normalize_region(region) == wanted)
}

fn normalize_region(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The prefixes of a global tag that no regional sub-tag covers.
pub fn unassigned(global: &PrefixSet, subtags: &[&PrefixSet]) -> PrefixSet {
    let regional = subtags
        .iter()
        .fold(PrefixSet::new(), |acc, s| acc.union(s))
        .aggregate();
    PrefixSet::from_nets(
        global
            .iter()
            .filter(|p| !regional.iter().any(|r| r.contains(p))),
    )
}

/// The union of the prefixes of several tags.
pub fn union_prefixes<'a, I: IntoIterator<Item = &'a ServiceTag>>(tags: I) -> PrefixSet {
    tags.into_iter()
        .fold(PrefixSet::new(), |acc, t| acc.union(&t.prefixes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::scan;

    const FEED: &str = r#"{"changeNumber": 1, "cloud": "Public", "values": [
      {"name": "AzureDigitalTwins", "id": "AzureDigitalTwins", "properties": {"changeNumber": 9, "region": "", "addressPrefixes": ["20.0.0.0/29", "20.0.1.0/29"]}},
      {"name": "AzureDigitalTwins.FranceCentral", "id": "AzureDigitalTwins.FranceCentral", "properties": {"changeNumber": 2, "region": "centralfrance", "addressPrefixes": ["20.0.0.0/29"]}},
      {"name": "AzureDigitalTwins.WestEurope", "id": "AzureDigitalTwins.WestEurope", "properties": {"changeNumber": 2, "region": "westeurope", "addressPrefixes": ["20.0.1.0/29"]}},
      {"name": "AzureDigitalTwinsX", "id": "AzureDigitalTwinsX", "properties": {"changeNumber": 2, "region": "", "addressPrefixes": ["20.9.0.0/29"]}}
    ]}"#;

    fn resolve(sel: &TagSelection) -> Result<Vec<ServiceTag>, FeedError> {
        let feed = scan(FEED.as_bytes(), |n| sel.wants(n)).expect("valid");
        sel.resolve(&feed)
    }

    #[test]
    fn global_tag_only_keeps_what_it_needs() {
        let sel = TagSelection::new(vec!["AzureDigitalTwins".into()], vec![]);
        assert!(sel.wants("AzureDigitalTwins"));
        assert!(!sel.wants("AzureDigitalTwins.WestEurope"));
        assert!(!sel.wants("AzureDigitalTwinsX"));
        let tags = resolve(&sel).expect("resolves");
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].prefixes.len(), 2);
    }

    #[test]
    fn regions_match_arm_names_and_feed_spelling() {
        for wanted in [
            "francecentral",
            "FranceCentral",
            "centralfrance",
            "france-central",
        ] {
            let sel = TagSelection::new(vec!["AzureDigitalTwins".into()], vec![wanted.into()]);
            assert!(!sel.wants("AzureDigitalTwinsX"));
            let tags = resolve(&sel).expect("resolves");
            assert_eq!(tags.len(), 1, "{wanted}");
            assert_eq!(tags[0].name, "AzureDigitalTwins.FranceCentral");
        }
    }

    #[test]
    fn a_region_without_subtag_is_an_error_listing_the_known_ones() {
        let sel = TagSelection::new(vec!["AzureDigitalTwins".into()], vec!["mars".into()]);
        let err = resolve(&sel).unwrap_err().to_string();
        assert!(err.contains("`mars`"), "{err}");
        assert!(err.contains("francecentral, westeurope"), "{err}");
    }
}
