//! Two tagsync processes on one database never interleave.

use std::time::Duration;

use crate::fake_http::{FakeServer, Response};
use crate::util::*;

#[test]
fn a_second_sync_waits_briefly_then_reports_the_lock() {
    let feed = fixture_bytes("ServiceTags_Public_20251106.json.gz");
    // The first run holds the lock while its download takes 3 s.
    let server = FakeServer::start(move |_| {
        Response::json(200, feed.clone()).delayed(Duration::from_secs(3))
    });
    let dir = TestDir::new();
    let cfg = dir.write(
        "tagsync.toml",
        format!(
            "[feed]\nsource = \"url\"\nurl = \"{}\"\ntimeout = \"10s\"\n[database]\nlock_timeout = \"500ms\"\n",
            server.url("/feed.json")
        ),
    );
    let cfg = cfg.to_str().expect("utf-8");
    let mut first = dir.command();
    first.args(["--config", cfg, "sync"]);
    let first = first.spawn().expect("spawn first");
    std::thread::sleep(Duration::from_millis(800));
    let second = dir.run(&["--config", cfg, "sync"]);
    second.assert_code(4);
    assert!(
        second.stderr.contains("another tagsync run holds the lock"),
        "{}",
        second.stderr
    );
    let first = finish(first.wait_with_output().expect("first finishes"));
    first.assert_code(0);
    let state = db_state(&dir.db());
    assert_eq!(state.runs, vec![(1, "changed".to_owned(), None)]);

    // With a longer wait the second run queues behind the first and both land.
    let cfg_wait = dir.write(
        "wait.toml",
        format!(
            "[feed]\nsource = \"url\"\nurl = \"{}\"\ntimeout = \"10s\"\n[database]\nlock_timeout = \"20s\"\n",
            server.url("/feed.json")
        ),
    );
    let cfg_wait = cfg_wait.to_str().expect("utf-8");
    let mut a = dir.command();
    a.args(["--config", cfg_wait, "sync"]);
    let a = a.spawn().expect("spawn");
    let mut b = dir.command();
    b.args(["--config", cfg_wait, "sync"]);
    let b = b.spawn().expect("spawn");
    finish(a.wait_with_output().expect("a")).assert_code(0);
    finish(b.wait_with_output().expect("b")).assert_code(0);
    let state = db_state(&dir.db());
    let outcomes: Vec<&str> = state.runs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(outcomes, vec!["changed", "unchanged", "unchanged"]);
}
