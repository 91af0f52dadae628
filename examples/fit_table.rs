//! Prints the README's table: the global AzureDigitalTwins tag of
//! 2025-11-06 fitted into several budgets, by tagsync's optimum and by two
//! strategies seen in the wild.
//!
//!     cargo run --release --example fit_table
//!
//! - "keep the broadest N": keep the N widest prefixes, drop the rest
//!   (admits nothing extra, but locks out the dropped addresses);
//! - "greedy merging": repeatedly replace the two neighbouring blocks whose
//!   common supernet admits the fewest extra addresses by that supernet.

use ipnet::{IpNet, Ipv4Net};
use tagsync::fit::{Bounds, CostModel, summarize};
use tagsync::prefix::PrefixSet;

#[path = "../tests/fixtures/load.rs"]
mod fixture;

fn size(n: &Ipv4Net) -> u64 {
    1u64 << (32 - u32::from(n.prefix_len()))
}

fn cost(n: &Ipv4Net, storage: bool) -> usize {
    if storage && n.prefix_len() == 31 {
        2
    } else {
        1
    }
}

fn supernet(a: &Ipv4Net, b: &Ipv4Net) -> Ipv4Net {
    let x = u32::from(a.network()) ^ u32::from(b.broadcast());
    let len = (x.leading_zeros() as u8)
        .min(a.prefix_len())
        .min(b.prefix_len());
    Ipv4Net::new(a.network(), len).expect("len").trunc()
}

fn broadest(prefixes: &[Ipv4Net], budget: usize, storage: bool) -> u64 {
    let mut sorted = prefixes.to_vec();
    sorted.sort_by_key(|n| n.prefix_len());
    let mut used = 0;
    let mut dropped = 0;
    for n in sorted {
        if used + cost(&n, storage) <= budget {
            used += cost(&n, storage);
        } else {
            dropped += size(&n);
        }
    }
    dropped
}

fn greedy(prefixes: &[Ipv4Net], budget: usize, storage: bool) -> u64 {
    let selected: u64 = prefixes.iter().map(size).sum();
    let mut blocks = prefixes.to_vec();
    blocks.sort();
    while blocks.iter().map(|n| cost(n, storage)).sum::<usize>() > budget {
        let covered = |b: &Ipv4Net| {
            prefixes
                .iter()
                .filter(|p| b.contains(*p))
                .map(size)
                .sum::<u64>()
        };
        let (i, merged) = (0..blocks.len() - 1)
            .map(|i| (i, supernet(&blocks[i], &blocks[i + 1])))
            .min_by_key(|(_, s)| size(s) - covered(s))
            .expect("two blocks at least");
        blocks.splice(i..=i + 1, [merged]);
        blocks.retain(|b| *b == merged || !merged.contains(b));
    }
    blocks.iter().map(size).sum::<u64>() - selected
}

fn main() {
    let body = fixture::feed_2025();
    let feed = tagsync::feed::scan(body.as_slice(), |n| n == "AzureDigitalTwins").expect("feed");
    let tag = feed.tag("AzureDigitalTwins").expect("tag");
    let v4 = PrefixSet::from_nets(tag.prefixes.v4().iter().map(|n| IpNet::V4(*n)));
    let prefixes: Vec<Ipv4Net> = v4.v4().to_vec();
    println!(
        "| target | budget | lossless rules | tagsync, blocks /16 or narrower (default) | tagsync, no bound | greedy merging (no bound) | keep the broadest N: addresses dropped |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, budget, storage) in [
        ("Event Hubs / Service Bus", 128, false),
        ("Event Hubs / Service Bus", 100, false),
        ("Event Hubs / Service Bus", 64, false),
        ("Event Hubs / Service Bus", 32, false),
        ("Storage (older accounts)", 200, true),
    ] {
        let model = CostModel { split_31: storage };
        let bounded = match summarize(&v4, budget, model, &Bounds::default()) {
            Ok(s) => format!("{} extra", s.extra_addresses),
            Err(tagsync::fit::FitError::Infeasible { smallest, .. }) => {
                format!("refused: needs {smallest} rules")
            }
            Err(e) => format!("refused: {e}"),
        };
        let open = Bounds {
            min_prefix_len_v4: 1,
            ..Bounds::default()
        };
        let unbounded = summarize(&v4, budget, model, &open).expect("fits without a bound");
        println!(
            "| {label} | {budget} | {} | {bounded} | {} extra | {} extra | {} dropped |",
            model.rules_of(&v4),
            unbounded.extra_addresses,
            greedy(&prefixes, budget, storage),
            broadest(&prefixes, budget, storage)
        );
    }
}
