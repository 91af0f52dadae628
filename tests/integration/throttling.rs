//! Resource Manager's request limits: the client keeps the same token
//! buckets as the fake (Azure's throttling model), so a run over more
//! targets than a burst allows is never answered 429.

use crate::fake_arm::{Bucket, FakeArm, Throttle, namespace_id};
use crate::util::*;
use crate::world::{EH, eh_rules, feed};

const TARGETS: usize = 16;

/// 16 Event Hubs namespaces behind a throttling fake, and a configuration
/// whose client buckets are `client`.
fn fleet(client: &str) -> (FakeArm, TestDir, String) {
    let arm = FakeArm::start();
    let dir = TestDir::new();
    let mut cfg = format!(
        "[azure]\nauth = \"managed-identity\"\nresource_manager = \"{}\"\ntimeout = \"5s\"\nretries = 10\nretry_backoff = \"10ms\"\nconcurrency = 8\n{client}\n",
        arm.base()
    );
    for i in 0..TARGETS {
        let name = format!("adt-eh-{i:02}");
        arm.add_namespace(EH, &name, "Standard", eh_rules());
        cfg.push_str(&format!(
            "\n[[targets]]\nname = \"{name}\"\nresource_id = \"{}\"\n",
            namespace_id(EH, &name)
        ));
    }
    let cfg = dir
        .write("tagsync.toml", cfg)
        .to_str()
        .expect("utf-8")
        .to_owned();
    // A small model of Azure's buckets, so the test is quick: 6 reads
    // refilled at 40/s, 4 writes refilled at 20/s.
    arm.state.lock().expect("lock").throttle = Some(Throttle {
        reads: Bucket::new(6, 40.0),
        writes: Bucket::new(4, 20.0),
    });
    (arm, dir, cfg)
}

fn sync(arm: &FakeArm, dir: &TestDir, cfg: &str, change: u64) -> Run {
    let f = dir.write(
        "feed.json",
        feed(&["20.39.2.134/32", "20.39.2.135/32"], change),
    );
    let env = arm.identity_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    dir.run_with(
        &[
            "--config",
            cfg,
            "--output",
            "json",
            "sync",
            "--feed-file",
            f.to_str().expect("utf-8"),
        ],
        &env,
    )
}

#[test]
fn a_run_over_more_targets_than_a_burst_gets_no_429() {
    let (arm, dir, cfg) =
        fleet("read_burst = 6\nreads_per_second = 40\nwrite_burst = 4\nwrites_per_second = 20\n");
    let run = sync(&arm, &dir, &cfg, 10);
    run.assert_code(0);
    let report = run.json();
    let applied = report["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["outcome"] == "applied")
        .count();
    assert_eq!(applied, TARGETS);
    let st = arm.state.lock().expect("lock");
    // 2 reads and 1 write per target: far past both bursts.
    assert_eq!(st.requests.len(), 3 * TARGETS, "{:#?}", st.requests);
    assert_eq!(st.throttled, 0, "requests answered 429");
}

#[test]
fn without_the_client_s_buckets_the_same_run_is_throttled() {
    // The control: a client that believes it may send 100,000 requests at
    // once meets the fake's 429s (and gets through them by Retry-After).
    let (arm, dir, cfg) = fleet(
        "read_burst = 100000\nreads_per_second = 10000\nwrite_burst = 100000\nwrites_per_second = 10000\n",
    );
    let run = sync(&arm, &dir, &cfg, 10);
    let throttled = arm.state.lock().expect("lock").throttled;
    assert!(throttled > 0, "the fake never throttled: exit {}", run.code);
    assert!(run.stderr.contains("TooManyRequests"), "{}", run.stderr);
}
