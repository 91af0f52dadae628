//! The scale benchmark: the real binary against a loopback fake Resource
//! Manager with a per-request latency and Azure's throttling model (250
//! reads refilled at 25/s, 200 writes at 10/s, 429 + Retry-After past
//! them), over many targets: a first run (every target changes) and an
//! unchanged run. Prints wall time, requests per target and 429s next to the
//! two lower bounds: latency (requests x latency / concurrency) and
//! throttling (what the buckets let through).
//!
//!     cargo build --release --bin tagsync
//!     cargo run --release --example scale -- [TARGETS] [LATENCY_MS] [BINARY]
//!
//! Defaults: 1000 targets, 20 ms, target/release/tagsync. A third of the
//! targets each are Event Hubs and Service Bus namespaces and Storage
//! accounts. Runs are a week apart in real life, so the fake's buckets are
//! full again when the second run starts.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

#[allow(dead_code)]
#[path = "../tests/integration/fake_http.rs"]
mod fake_http;

#[allow(dead_code)]
#[path = "../tests/integration/fake_arm.rs"]
mod fake_arm;

use fake_arm::{FakeArm, Throttle, namespace_id, storage_id};

const CONCURRENCY: usize = 8;

struct Outcome {
    wall: Duration,
    code: i32,
    reads: usize,
    writes: usize,
    throttled: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let targets: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let latency_ms: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let binary = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "target/release/tagsync".into());
    let binary = std::fs::canonicalize(&binary).unwrap_or_else(|e| {
        eprintln!("{binary}: {e}; build it first: cargo build --release --bin tagsync");
        std::process::exit(2)
    });
    let latency = Duration::from_millis(latency_ms);

    let arm = FakeArm::start();
    let dir = std::env::temp_dir().join(format!("tagsync-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let mut cfg = format!(
        "[azure]\nauth = \"managed-identity\"\nresource_manager = \"{}\"\nconcurrency = {CONCURRENCY}\ndeadline = \"1h\"\n\n[database]\npath = \"{}\"\n",
        arm.base(),
        dir.join("tagsync.db").display()
    );
    let rules = json!({"publicNetworkAccess": "Enabled", "defaultAction": "Deny",
        "virtualNetworkRules": [], "ipRules": [{"ipMask": "1.1.1.1", "action": "Allow"}],
        "trustedServiceAccessEnabled": false});
    let acls = json!({"bypass": "AzureServices", "resourceAccessRules": [], "virtualNetworkRules": [],
        "ipRules": [{"value": "25.1.2.3", "action": "Allow"}], "defaultAction": "Deny"});
    let (mut namespaces, mut accounts) = (0, 0);
    for i in 0..targets {
        let id = match i % 3 {
            0 | 1 => {
                let provider = if i % 3 == 0 {
                    "Microsoft.EventHub"
                } else {
                    "Microsoft.ServiceBus"
                };
                let name = format!("ns{i:05}");
                arm.add_namespace(provider, &name, "Premium", rules.clone());
                namespaces += 1;
                namespace_id(provider, &name)
            }
            _ => {
                let name = format!("sa{i:05}");
                arm.add_storage(&name, "westeurope", acls.clone());
                accounts += 1;
                storage_id(&name)
            }
        };
        cfg.push_str(&format!(
            "\n[[targets]]\nname = \"t{i:05}\"\nresource_id = \"{id}\"\n"
        ));
    }
    std::fs::write(dir.join("tagsync.toml"), cfg).expect("config");
    let prefixes = [
        "20.36.125.120/29",
        "20.39.2.134/32",
        "4.207.251.102/31",
        "20.43.47.72/29",
    ];
    let feed = json!({"changeNumber": 10, "cloud": "Public", "values": [
        {"name": "AzureDigitalTwins", "id": "AzureDigitalTwins", "properties": {"changeNumber": 10,
         "region": "", "regionId": 0, "platform": "Azure", "systemService": "AzureDigitalTwins",
         "addressPrefixes": prefixes, "networkFeatures": null}}]});
    std::fs::write(dir.join("feed.json"), feed.to_string()).expect("feed");

    let run = |label: &str| -> Outcome {
        {
            let mut st = arm.state.lock().expect("lock");
            st.throttle = Some(Throttle::azure());
            st.throttled = 0;
            st.requests.clear();
            st.delay = Some(latency);
        }
        let started = Instant::now();
        let mut cmd = Command::new(&binary);
        cmd.current_dir(&dir)
            .args(["--config", "tagsync.toml", "-q", "--output", "json", "sync"])
            .args(["--feed-file", "feed.json"])
            .env_remove("RUST_LOG");
        for (k, v) in arm.identity_env() {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run tagsync");
        let wall = started.elapsed();
        let st = arm.state.lock().expect("lock");
        let reads = st.requests.iter().filter(|r| r.starts_with("GET ")).count();
        let o = Outcome {
            wall,
            code: out.status.code().unwrap_or(-1),
            reads,
            writes: st.requests.len() - reads,
            throttled: st.throttled,
        };
        if o.code != 0 {
            eprintln!(
                "{label}: exit {}\n{}",
                o.code,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        o
    };

    println!(
        "{targets} targets ({namespaces} namespaces, {accounts} storage accounts), {latency_ms} ms per request, concurrency {CONCURRENCY}, Azure's buckets (250 reads at 25/s, 200 writes at 10/s)\n"
    );
    println!(
        "| run | wall time | requests / target | 429s | latency bound | throttle bound | wall / max(bounds) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for label in ["first (all change)", "unchanged"] {
        let o = run(label);
        let requests = o.reads + o.writes - o.throttled;
        let latency_bound = latency.as_secs_f64() * requests as f64 / CONCURRENCY as f64;
        let throttle_bound = ((o.reads as f64 - 250.0) / 25.0)
            .max((o.writes as f64 - 200.0) / 10.0)
            .max(0.0);
        let bound = latency_bound.max(throttle_bound);
        println!(
            "| {label} | {:.2} s | {:.2} | {} | {:.2} s | {:.2} s | {:.2} |",
            o.wall.as_secs_f64(),
            requests as f64 / targets as f64,
            o.throttled,
            latency_bound,
            throttle_bound,
            o.wall.as_secs_f64() / bound
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
