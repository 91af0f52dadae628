//! Property tests: PrefixSet laws and the streaming scanner against a full
//! serde_json parse.

use std::collections::BTreeSet;

use ipnet::{IpNet, Ipv4Net};
use iprange::IpRange;
use proptest::prelude::*;
use tagsync::feed::scan::scan_with_window;
use tagsync::prefix::PrefixSet;

/// Small IPv4 prefixes inside 20.0.0.0/20, so overlaps and siblings are common.
fn small_v4() -> impl Strategy<Value = IpNet> {
    (0u32..4096, 20u8..=32).prop_map(|(host, len)| {
        let addr = std::net::Ipv4Addr::from((20u32 << 24) | host);
        IpNet::V4(Ipv4Net::new(addr, len).expect("valid length").trunc())
    })
}

fn v6() -> impl Strategy<Value = IpNet> {
    (any::<u16>(), 100u8..=128).prop_map(|(host, len)| {
        let addr = std::net::Ipv6Addr::new(0x2603, 0x1000, 0, 0, 0, 0, 0, host);
        IpNet::V6(
            ipnet::Ipv6Net::new(addr, len)
                .expect("valid length")
                .trunc(),
        )
    })
}

fn set() -> impl Strategy<Value = PrefixSet> {
    prop::collection::vec(prop_oneof![4 => small_v4(), 1 => v6()], 0..40)
        .prop_map(PrefixSet::from_nets)
}

fn addresses(s: &PrefixSet) -> BTreeSet<u32> {
    s.v4()
        .iter()
        .flat_map(|n| u32::from(n.network())..=u32::from(n.broadcast()))
        .collect()
}

proptest! {
    #[test]
    fn aggregation_covers_exactly_the_same_addresses(a in set()) {
        let agg = a.aggregate();
        prop_assert_eq!(addresses(&agg), addresses(&a));
        prop_assert!(agg.len() <= a.len());
        // No two aggregated blocks overlap or could merge further.
        prop_assert_eq!(agg.aggregate(), agg.clone());
        // iprange, an independent implementation, agrees on the ranges.
        let mut range: IpRange<Ipv4Net> = a.v4().iter().copied().collect();
        range.simplify();
        let mut ours: Vec<Ipv4Net> = agg.v4().to_vec();
        let mut theirs: Vec<Ipv4Net> = range.iter().collect();
        ours.sort();
        theirs.sort();
        prop_assert_eq!(ours, theirs);
        prop_assert_eq!(a.ipv4_addresses(), addresses(&a).len() as u64);
    }

    #[test]
    fn difference_laws(a in set(), b in set()) {
        let a_minus_b = a.difference(&b);
        let both = a.intersection(&b);
        // (A - B) and (A ∩ B) partition A.
        prop_assert_eq!(a_minus_b.union(&both), a.clone());
        prop_assert!(a_minus_b.intersection(&b).is_empty());
        prop_assert!(a.difference(&a).is_empty());
        prop_assert_eq!(a.difference(&PrefixSet::new()), a.clone());
        // Applying the diff to B gives A back: B - removed + added = A.
        let added = a.difference(&b);
        let removed = b.difference(&a);
        prop_assert_eq!(b.difference(&removed).union(&added), a.clone());
        // The text form is canonical and round-trips.
        prop_assert_eq!(PrefixSet::from_lines(&a.to_lines()).expect("parses"), a.clone());
    }

    #[test]
    fn scanner_agrees_with_serde_json_at_every_window_size(
        names in prop::collection::btree_set("[A-Za-z]{1,6}(\\.[A-Za-z]{1,4})?|we\\\\\"ird[{}]", 1..8),
        window in 1usize..64,
        keep_mask in any::<u8>(),
        crlf in any::<bool>(),
        bom in any::<bool>(),
        name_last in any::<bool>(),
    ) {
        let names: Vec<String> = names.into_iter().collect();
        let mut values = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let props = serde_json::json!({
                "changeNumber": i, "region": "r{}", "addressPrefixes": [format!("20.0.{i}.0/24"), "2603:1000::/48"],
                "networkFeatures": ["API", "NSG"], "note": "brackets ] } [ { and \\\" quotes"
            });
            // Key order varies: the scanner must not depend on `name` first.
            let obj = if name_last {
                format!("{{\"id\": {id}, \"properties\": {props}, \"name\": {id}}}", id = serde_json::to_string(name).expect("json"))
            } else {
                format!("{{\"name\": {id}, \"id\": {id}, \"properties\": {props}}}", id = serde_json::to_string(name).expect("json"))
            };
            values.push(obj);
        }
        let sep = if crlf { ",\r\n" } else { "," };
        let mut text = format!("{{\"changeNumber\": \"77\", \"extra\": {{\"a\": [1, {{\"b\": \"}}\"}}]}}, \"cloud\": \"Public\", \"values\": [{}]}}", values.join(sep));
        if bom {
            text.insert(0, '\u{feff}');
        }
        let keep = |n: &str| names.iter().position(|x| x == n).is_some_and(|i| keep_mask & (1 << (i % 8)) != 0);
        let scanned = scan_with_window(text.as_bytes(), window, keep).expect("scans");
        let full: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).expect("valid json");
        prop_assert_eq!(scanned.change_number, 77);
        prop_assert_eq!(&scanned.cloud, "Public");
        let all: Vec<String> = full["values"].as_array().expect("values").iter().map(|v| v["name"].as_str().expect("name").to_owned()).collect();
        prop_assert_eq!(&scanned.tag_names, &all);
        for (name, raw) in &scanned.kept {
            prop_assert!(keep(name));
            let kept: serde_json::Value = serde_json::from_slice(raw).expect("kept tag is valid JSON");
            let original = full["values"].as_array().expect("values").iter().find(|v| v["name"] == name.as_str()).expect("present");
            prop_assert_eq!(&kept, original);
        }
        let expected_kept = all.iter().filter(|n| keep(n)).count();
        prop_assert_eq!(scanned.kept.len(), expected_kept);
        // Every prefix of a cut body is refused, never mistaken for a feed.
        let cut = text.len() * (window % 7 + 1) / 9;
        prop_assert!(scan_with_window(&text.as_bytes()[..cut], window, keep).is_err());
    }
}

/// A small feed in the real one's shape: pretty-printed, `name` first in
/// every tag (the scanner's fast path), several tags, prefix lists long
/// enough that the validator predicts an item's indentation from the one
/// before.
fn small_feed() -> String {
    let tags: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "    {{\n      \"name\": \"Tag{i}\",\n      \"id\": \"Tag{i}\",\n      \"properties\": {{\n        \"changeNumber\": {i},\n        \"region\": \"westeurope\",\n        \"regionId\": 18,\n        \"addressPrefixes\": [\n          \"20.0.{i}.0/24\",\n          \"20.1.{i}.0/24\",\n          \"20.2.{i}.128/25\",\n          \"2603:1000::/48\"\n        ],\n        \"networkFeatures\": [\"API\", \"NSG\"],\n        \"note\": null, \"ok\": true, \"weight\": -1.5e3\n      }}\n    }}"
            )
        })
        .collect();
    let doc = format!(
        "{{\n  \"changeNumber\": 77,\n  \"cloud\": \"Public\",\n  \"values\": [\n{}\n  ]\n}}\n",
        tags.join(",\n")
    );
    assert!(serde_json::from_str::<serde::de::IgnoredAny>(&doc).is_ok());
    doc
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Damage anywhere (a byte replaced, dropped or inserted) that makes
    /// the document invalid JSON is refused, whichever tag is selected and
    /// wherever the window cuts: nothing outside the selected tags escapes
    /// validation.
    #[test]
    fn a_feed_damaged_anywhere_is_refused(
        at in any::<prop::sample::Index>(),
        kind in 0u8..3,
        byte in prop_oneof![
            Just(b'"'), Just(b','), Just(b'}'), Just(b']'), Just(b'{'), Just(b'['), Just(b':'),
            Just(b'\\'), Just(0x01u8), Just(0xFFu8), Just(0xC3u8), Just(b'x'), Just(b'0'), Just(b'-'),
            Just(b' '), Just(b'e'), Just(b'.'),
        ],
        // Windows that cut every token, and windows of many tokens.
        window in prop_oneof![1usize..80, 64usize..2000],
        selected in 0usize..6,
    ) {
        let good = small_feed();
        let mut bytes = good.into_bytes();
        let i = at.index(bytes.len());
        match kind {
            0 => bytes[i] = byte,
            1 => { bytes.remove(i); }
            _ => bytes.insert(i, byte),
        }
        let valid_json = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
        let name = format!("Tag{selected}");
        let scanned = scan_with_window(bytes.as_slice(), window, |n| n == name);
        if !valid_json {
            prop_assert!(scanned.is_err(), "accepted damage at {i} ({kind}, {byte:#x}): {}", String::from_utf8_lossy(&bytes));
        }
    }
}

mod fit {
    use std::collections::BTreeSet;

    use ipnet::{IpNet, Ipv4Net};
    use proptest::prelude::*;
    use tagsync::fit::{Bounds, CostModel, FitError, summarize};
    use tagsync::prefix::PrefixSet;

    fn addresses(nets: &[Ipv4Net]) -> BTreeSet<u32> {
        nets.iter()
            .flat_map(|n| u32::from(n.network())..=u32::from(n.broadcast()))
            .collect()
    }

    /// The smallest block holding both nets.
    fn lca(a: &Ipv4Net, b: &Ipv4Net) -> Ipv4Net {
        let (x, y) = (u32::from(a.network()), u32::from(b.broadcast()));
        let common = (x ^ y)
            .leading_zeros()
            .min(u32::from(a.prefix_len().min(b.prefix_len()))) as u8;
        Ipv4Net::new(a.network(), common).expect("len").trunc()
    }

    /// Brute force: every split of the sorted prefixes into contiguous
    /// groups, each covered by its smallest block (a lone /31 on Storage
    /// also by its /30). Returns the fewest extra addresses per budget.
    fn brute(prefixes: &[Ipv4Net], split_31: bool, min_len: u8, budget: usize) -> Option<u64> {
        let n = prefixes.len();
        let selected = addresses(prefixes).len() as u64;
        let mut best: Option<u64> = None;
        for cuts in 0u32..(1 << (n - 1)) {
            // Options per group: list of (block, cost).
            let mut groups: Vec<Vec<(Ipv4Net, usize)>> = Vec::new();
            let mut start = 0;
            let mut ok = true;
            for i in 0..n {
                if i == n - 1 || cuts & (1 << i) != 0 {
                    let g = &prefixes[start..=i];
                    let block = g.iter().skip(1).fold(g[0], |acc, p| lca(&acc, p));
                    let mut opts = Vec::new();
                    if g.len() == 1 {
                        let c = if split_31 && block.prefix_len() == 31 {
                            2
                        } else {
                            1
                        };
                        opts.push((block, c));
                        if c == 2 && min_len <= 30 {
                            opts.push((Ipv4Net::new(block.network(), 30).expect("len").trunc(), 1));
                        }
                    } else if block.prefix_len() >= min_len {
                        let c = if split_31 && block.prefix_len() == 31 {
                            2
                        } else {
                            1
                        };
                        opts.push((block, c));
                    } else {
                        ok = false;
                    }
                    groups.push(opts);
                    start = i + 1;
                }
            }
            if !ok {
                continue;
            }
            // Every combination of the per-group options.
            let mut combos: Vec<(Vec<Ipv4Net>, usize)> = vec![(Vec::new(), 0)];
            for opts in &groups {
                combos = combos
                    .iter()
                    .flat_map(|(blocks, cost)| {
                        opts.iter().map(move |(b, c)| {
                            let mut bs = blocks.clone();
                            bs.push(*b);
                            (bs, cost + c)
                        })
                    })
                    .collect();
            }
            for (blocks, cost) in combos {
                if cost <= budget {
                    let extra = addresses(&blocks).len() as u64 - selected;
                    best = Some(best.map_or(extra, |b: u64| b.min(extra)));
                }
            }
        }
        best
    }

    fn instance() -> impl Strategy<Value = Vec<Ipv4Net>> {
        prop::collection::vec((0u32..1024, 26u8..=32), 1..12).prop_map(|v| {
            let nets: Vec<IpNet> = v
                .into_iter()
                .map(|(host, len)| {
                    let addr = std::net::Ipv4Addr::from((20u32 << 24) | (5 << 16) | host);
                    IpNet::V4(Ipv4Net::new(addr, len).expect("len").trunc())
                })
                .collect();
            PrefixSet::from_nets(nets).aggregate().v4().to_vec()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(120))]
        #[test]
        fn the_optimum_equals_brute_force_covers_everything_and_fits(
            prefixes in instance(),
            split_31 in any::<bool>(),
            min_len in 20u8..=27,
        ) {
            let cost = CostModel { split_31 };
            let selected = PrefixSet::from_nets(prefixes.iter().map(|n| IpNet::V4(*n)));
            let lossless = cost.rules_of(&selected);
            let bounds = Bounds { min_prefix_len_v4: min_len, ..Bounds::default() };
            for budget in 1..=lossless + 1 {
                let expected = brute(&prefixes, split_31, min_len, budget);
                match summarize(&selected, budget, cost, &bounds) {
                    Ok(s) => {
                        prop_assert!(s.rules <= budget);
                        prop_assert_eq!(s.rules, cost.rules_of(&s.blocks));
                        let covered = addresses(s.blocks.v4());
                        prop_assert!(addresses(&prefixes).is_subset(&covered), "covers every selected address");
                        let extra = covered.len() as u64 - addresses(&prefixes).len() as u64;
                        prop_assert_eq!(u128::from(extra), s.extra_addresses);
                        prop_assert_eq!(Some(extra), expected, "budget {}", budget);
                        if budget >= lossless {
                            prop_assert_eq!(extra, 0);
                        }
                        for b in s.blocks.v4() {
                            prop_assert!(b.prefix_len() >= min_len || prefixes.contains(b));
                        }
                    }
                    Err(FitError::Infeasible { smallest, .. }) => {
                        prop_assert_eq!(expected, None, "budget {}", budget);
                        prop_assert!(smallest > budget);
                        prop_assert!(brute(&prefixes, split_31, min_len, smallest).is_some());
                    }
                    Err(e) => prop_assert!(false, "{}", e),
                }
            }
        }
    }
}
