//! Fitting prefixes into a rule budget (issue: under 10 ms for the global
//! tag into 128 rules).
//!
//! - `adt_global_into_128`: the 289 IPv4 prefixes of the 2025-11-06
//!   AzureDigitalTwins tag into 128 rules (what an Event Hubs target, IPv4
//!   by default, fits). With its 78 IPv6 prefixes and the default /48
//!   bound the whole tag needs at least 174 rules.
//! - `all_tags_into_1000`: the union of every tag of that feed (38,415
//!   distinct IPv4 prefixes, 1,887 after lossless aggregation) into 1,000.
//! - `scattered_30000_into_2000`: 30,000 single addresses spread over
//!   20.0.0.0/10, no two adjacent (nothing aggregates), into 2,000 rules
//!   (issue: under 0.3 s).

use criterion::{Criterion, criterion_group, criterion_main};
use ipnet::IpNet;
use tagsync::fit::{Bounds, CostModel, summarize};
use tagsync::prefix::PrefixSet;

#[path = "../tests/fixtures/load.rs"]
mod fixture;

fn bench(c: &mut Criterion) {
    let body = fixture::feed_2025();
    let all = tagsync::feed::scan(body.as_slice(), |_| true).expect("feed");
    let adt_all = all.tag("AzureDigitalTwins").expect("tag").prefixes;
    let adt = PrefixSet::from_nets(adt_all.v4().iter().map(|n| IpNet::V4(*n)));
    let union_v4 = all
        .kept_tags()
        .expect("tags")
        .iter()
        .fold(PrefixSet::new(), |acc, t| {
            acc.union(&PrefixSet::from_nets(
                t.prefixes.v4().iter().map(|n| IpNet::V4(*n)),
            ))
        });
    assert_eq!(union_v4.len(), 38_415);
    assert_eq!(union_v4.aggregate().len(), 1_887);
    let plain = CostModel { split_31: false };
    let bounds = Bounds::default();
    let mut g = c.benchmark_group("fit");
    g.bench_function("adt_global_into_128", |b| {
        b.iter(|| summarize(&adt, 128, plain, &bounds).expect("fits"))
    });
    g.sample_size(10);
    g.bench_function("all_tags_into_1000", |b| {
        b.iter(|| summarize(&union_v4, 1000, plain, &bounds).expect("fits"))
    });
    // A fixed pseudo-random walk: 30,000 distinct, non-adjacent addresses.
    let mut x = u32::from(std::net::Ipv4Addr::new(20, 0, 0, 0));
    let mut state: u64 = 20261201;
    let scattered = PrefixSet::from_nets((0..30_000).map(|_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x += 2 + ((state >> 33) % 280) as u32;
        IpNet::V4(ipnet::Ipv4Net::new(x.into(), 32).expect("prefix"))
    }));
    assert_eq!(scattered.len(), 30_000);
    assert_eq!(scattered.aggregate().len(), 30_000);
    g.bench_function("scattered_30000_into_2000", |b| {
        b.iter(|| summarize(&scattered, 2000, plain, &bounds).expect("fits"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
