//! "Did you mean": the closest known name to a mistyped one.

/// The candidate closest to `wanted` by edit distance, ignoring case, if it
/// is close enough to be what was meant (at most a quarter of the name's
/// length, and at least two, edits away).
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = wanted.to_lowercase();
    let limit = (lower.chars().count() / 4).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn near_names_are_suggested_and_far_ones_are_not() {
        let tags = ["AzureDigitalTwins", "AzureDevOps", "AzureDataLake"];
        assert_eq!(closest("AzureDigitalTwin", tags), Some("AzureDigitalTwins"));
        assert_eq!(
            closest("azuredigitaltwins", tags),
            Some("AzureDigitalTwins")
        );
        assert_eq!(closest("AzureDigtalTwins", tags), Some("AzureDigitalTwins"));
        assert_eq!(closest("Storage", tags), None);
        let regions = ["westeurope", "northeurope", "francecentral"];
        assert_eq!(closest("westeurop", regions), Some("westeurope"));
        assert_eq!(closest("mars", regions), None);
    }
}
