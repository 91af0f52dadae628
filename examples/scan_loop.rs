//! Times the feed scan inside one process, for A/B comparisons of the
//! scanner between two builds: the first scan from the file (cold), three
//! more from the file, and the best of 15 rounds of 20 scans of the bytes in
//! memory. On a noisy virtual machine the best of many is steadier than
//! criterion's mean across builds.
//!
//!     cargo build --release --example scan_loop
//!     target/release/examples/scan_loop FEED.json

use std::time::Instant;

fn scan_file(path: &str) -> f64 {
    let t = Instant::now();
    let file = std::fs::File::open(path).expect("readable feed");
    let feed = tagsync::feed::scan(file, |n| n == "AzureDigitalTwins").expect("valid feed");
    std::hint::black_box(feed);
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: scan_loop FEED.json");
        std::process::exit(2);
    };
    let cold = scan_file(&path);
    let again: Vec<String> = (0..3).map(|_| format!("{:.2}", scan_file(&path))).collect();
    let body = std::fs::read(&path).expect("readable feed");
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..20 {
            let feed =
                tagsync::feed::scan(body.as_slice(), |n| n == "AzureDigitalTwins").expect("valid");
            std::hint::black_box(feed);
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e3 / 20.0);
    }
    println!(
        "from the file: first {cold:.2} ms, again {} ms; in memory: best {best:.2} ms",
        again.join(" / ")
    );
}
