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

    /// Selects from a set of tags (a feed's, or a run's recorded ones): the
    /// one implementation of what a selection means. Each named tag is
    /// taken as it is, or, with regions, replaced by its sub-tag for each
    /// region (every region must have one); with `include_unassigned`, the
    /// global tag's prefixes that no sub-tag carries are added.
    pub fn select<'a, T: Tagged>(&self, tags: &'a [T]) -> Result<Selected<'a, T>, SelectError> {
        let mut followed: Vec<&T> = Vec::new();
        let mut consulted: Vec<&T> = Vec::new();
        let mut prefixes = PrefixSet::new();
        for base in &self.tags {
            let global = || {
                tags.iter()
                    .find(|t| t.name() == base)
                    .ok_or_else(|| SelectError::MissingTag(base.clone()))
            };
            if self.regions.is_empty() {
                let g = global()?;
                prefixes = prefixes.union(g.prefixes());
                followed.push(g);
                continue;
            }
            let sub = format!("{base}.");
            let regional: Vec<&T> = tags.iter().filter(|t| t.name().starts_with(&sub)).collect();
            for wanted in &self.regions {
                let found: Vec<&T> = regional
                    .iter()
                    .copied()
                    .filter(|t| region_matches(base, t.name(), t.region(), wanted))
                    .collect();
                if found.is_empty() {
                    let mut known: Vec<String> = regional
                        .iter()
                        .map(|t| subtag_location(base, t.name()))
                        .collect();
                    known.sort();
                    return Err(SelectError::NoRegionalSubtag {
                        tag: base.clone(),
                        region: wanted.clone(),
                        available: known.join(", "),
                    });
                }
                for t in found {
                    prefixes = prefixes.union(t.prefixes());
                    followed.push(t);
                }
            }
            if self.include_unassigned {
                // The global tag and every sub-tag: what none carries is
                // computed from them (see [`unassigned`]).
                let g = global()?;
                let subs: Vec<&PrefixSet> = regional.iter().map(|t| t.prefixes()).collect();
                prefixes = prefixes.union(&unassigned(g.prefixes(), &subs));
                followed.push(g);
                consulted.extend(regional.iter().copied());
            }
        }
        consulted.extend(followed.iter().copied());
        for list in [&mut followed, &mut consulted] {
            list.sort_by(|a, b| a.name().cmp(b.name()));
            list.dedup_by(|a, b| a.name() == b.name());
        }
        Ok(Selected {
            followed,
            consulted,
            prefixes,
        })
    }

    /// Resolves the selection against a scanned feed: the tags it consults,
    /// fully parsed, sorted by name. Every named tag must exist in the feed
    /// (a missing one is reported with the feed's closest names).
    pub fn resolve(&self, feed: &ScannedFeed) -> Result<Vec<ServiceTag>, FeedError> {
        let parsed: Vec<ServiceTag> = feed
            .kept
            .iter()
            .filter(|(name, _)| self.wants(name))
            .map(|(name, _)| feed.tag(name))
            .collect::<Result<_, _>>()?;
        Ok(self
            .resolve_parsed(feed, &parsed)?
            .into_iter()
            .cloned()
            .collect())
    }

    /// [`TagSelection::resolve`] over tags already parsed from `feed` (the
    /// feed stage parses each kept tag once for all its selections).
    pub fn resolve_parsed<'a>(
        &self,
        feed: &ScannedFeed,
        parsed: &'a [ServiceTag],
    ) -> Result<Vec<&'a ServiceTag>, FeedError> {
        if let Some(base) = self.tags.iter().find(|b| !feed.has_tag(b)) {
            return Err(feed.missing(base));
        }
        let selected = self.select(parsed).map_err(|e| match e {
            SelectError::MissingTag(base) => feed.missing(&base),
            SelectError::NoRegionalSubtag {
                tag,
                region,
                available,
            } => {
                let compact = normalize_region(&region);
                let suggestion = crate::suggest::closest(&compact, available.split(", "))
                    .map(|r| format!("; did you mean `{r}`?"))
                    .unwrap_or_default();
                FeedError::NoRegionalSubtag {
                    tag,
                    region,
                    available,
                    suggestion,
                }
            }
        })?;
        Ok(selected.consulted)
    }
}

/// A tag as [`TagSelection::select`] sees it.
pub trait Tagged {
    fn name(&self) -> &str;
    /// The feed's `region` field (empty for a global tag).
    fn region(&self) -> &str;
    fn prefixes(&self) -> &PrefixSet;
}

impl Tagged for TagState {
    fn name(&self) -> &str {
        &self.name
    }
    fn region(&self) -> &str {
        &self.region
    }
    fn prefixes(&self) -> &PrefixSet {
        &self.prefixes
    }
}

impl Tagged for ServiceTag {
    fn name(&self) -> &str {
        &self.name
    }
    fn region(&self) -> &str {
        &self.region
    }
    fn prefixes(&self) -> &PrefixSet {
        &self.prefixes
    }
}

impl From<ServiceTag> for TagState {
    fn from(tag: ServiceTag) -> Self {
        TagState {
            name: tag.name,
            region: tag.region,
            change_number: tag.change_number,
            prefixes: tag.prefixes,
        }
    }
}

/// What a selection takes from a set of tags.
#[derive(Debug)]
pub struct Selected<'a, T> {
    /// The tags it follows (reported with a target): the named tags, or
    /// their sub-tags for the regions, and the global tag with
    /// `include_unassigned`. Sorted by name.
    pub followed: Vec<&'a T>,
    /// Every tag its prefixes were computed from (with `include_unassigned`
    /// also every sub-tag): what a run must record. Sorted by name.
    pub consulted: Vec<&'a T>,
    /// The prefixes it gives.
    pub prefixes: PrefixSet,
}

/// A selection that the tags at hand cannot satisfy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("tag `{0}` is not among the recorded tags; run `tagsync sync` to record it")]
    MissingTag(String),
    #[error(
        "no sub-tag of `{tag}` for region `{region}` is recorded (recorded regions: {available})"
    )]
    NoRegionalSubtag {
        tag: String,
        region: String,
        available: String,
    },
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

    fn state(name: &str, region: &str, prefixes: &[&str]) -> TagState {
        TagState {
            name: name.into(),
            region: region.into(),
            change_number: 1,
            prefixes: PrefixSet::parse_all(prefixes.iter().copied())
                .expect("valid")
                .0,
        }
    }

    #[test]
    fn select_picks_only_the_regions_asked_for_plus_the_unassigned_prefixes() {
        let states = vec![
            state(
                "AzureDigitalTwins",
                "",
                &["20.0.0.0/29", "20.0.1.0/29", "20.0.9.0/29"],
            ),
            state(
                "AzureDigitalTwins.FranceCentral",
                "centralfrance",
                &["20.0.0.0/29"],
            ),
            state(
                "AzureDigitalTwins.NorthEurope",
                "northeurope",
                &["20.0.1.0/29"],
            ),
        ];
        let mut sel = TagSelection::new(
            vec!["AzureDigitalTwins".into()],
            vec!["francecentral".into()],
        );
        sel.include_unassigned = true;
        let selected = sel.select(&states).expect("selects");
        let names: Vec<&str> = selected.followed.iter().map(|t| t.name.as_str()).collect();
        // North Europe is not selected: it must not be reported (nor warned about).
        assert_eq!(
            names,
            vec!["AzureDigitalTwins", "AzureDigitalTwins.FranceCentral"]
        );
        // ...but the unassigned prefixes were computed from it, so a run records it.
        assert_eq!(selected.consulted.len(), 3);
        // France Central's prefix and the one no region carries; not North Europe's.
        assert_eq!(selected.prefixes.to_lines(), "20.0.0.0/29\n20.0.9.0/29");

        let missing = TagSelection::new(vec!["AzureDigitalTwins".into()], vec!["mars".into()]);
        assert!(
            missing
                .select(&states)
                .unwrap_err()
                .to_string()
                .contains("`mars`")
        );
    }

    #[test]
    fn a_region_without_subtag_is_an_error_listing_the_known_ones() {
        let sel = TagSelection::new(vec!["AzureDigitalTwins".into()], vec!["mars".into()]);
        let err = resolve(&sel).unwrap_err().to_string();
        assert!(err.contains("`mars`"), "{err}");
        assert!(err.contains("francecentral, westeurope"), "{err}");
    }
}
