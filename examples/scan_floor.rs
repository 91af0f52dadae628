//! The floor for `feed show`'s whole-process comparison: a program that
//! only reads a file through a 64 KiB window and counts its quotes and
//! brackets with memchr, the least any streaming scan of the feed does.
//!
//!     cargo build --release --example scan_floor
//!     hyperfine -N 'target/release/examples/scan_floor FEED.json'

use std::io::Read;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: scan_floor FILE");
        std::process::exit(2);
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    let (mut quotes, mut brackets) = (0usize, 0usize);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        };
        quotes += memchr::memchr_iter(b'"', &buf[..n]).count();
        brackets += memchr::memchr3_iter(b'{', b'[', b']', &buf[..n]).count();
    }
    println!("{quotes} quotes, {brackets} brackets");
}
