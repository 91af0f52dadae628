//! Parsing the 4.1 MB feed of 2025-11-06 and extracting `AzureDigitalTwins`.
//!
//! `scan_and_select` is what `tagsync feed show` and `sync` do; the
//! serde_json lines are baselines: a full DOM parse, and a typed parse that
//! still visits every tag.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tagsync::feed::scan;

#[path = "../tests/fixtures/load.rs"]
mod fixture;

fn bench(c: &mut Criterion) {
    let body = fixture::feed_2025();
    let mut g = c.benchmark_group("feed_2025_11");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("scan_and_select_adt", |b| {
        b.iter(|| {
            let feed = scan(body.as_slice(), |n| n == "AzureDigitalTwins").expect("valid");
            let tag = feed.tag("AzureDigitalTwins").expect("present");
            assert_eq!(tag.prefixes.len(), 367);
            tag
        })
    });
    g.bench_function("serde_json_value_baseline", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid");
            v["values"].as_array().map(|a| a.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
