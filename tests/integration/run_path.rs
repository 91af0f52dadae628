//! One run path: every command goes through the same session and per-target
//! pipeline, so they agree with each other; and each costs no more Resource
//! Manager requests than it needs.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::fake_arm::*;
use crate::util::*;
use crate::world::*;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// The requests of one run, per resource: (Event Hubs, Service Bus, Storage).
fn per_resource(requests: &[String]) -> (usize, usize, usize) {
    let n = |part: &str| requests.iter().filter(|r| r.contains(part)).count();
    (
        n("microsoft.eventhub/"),
        n("microsoft.servicebus/"),
        n("microsoft.storage/"),
    )
}

#[test]
fn a_changed_target_costs_three_requests_an_unchanged_one_two_and_storage_one_less() {
    let w = world("Standard", "");
    w.sync(&[P1, P2, P3], 10, &[]).assert_code(0);
    let first = w.arm.take_requests();
    // A changed namespace: GET namespace, GET rules, PUT (its answer is
    // the read-back). A changed account: GET, PATCH.
    assert_eq!(per_resource(&first), (3, 3, 2), "{first:#?}");

    let run = w.sync(&[P1, P2, P3], 10, &[]);
    run.assert_code(0);
    let report = run.json();
    for name in ["adt-events", "adt-queue", "adt-deadletter"] {
        assert_eq!(w.target(&report, name)["outcome"], "unchanged", "{name}");
    }
    let second = w.arm.take_requests();
    assert_eq!(per_resource(&second), (2, 2, 1), "{second:#?}");
    assert!(second.iter().all(|r| r.starts_with("GET ")), "{second:#?}");
}

#[test]
fn a_saved_plan_reads_each_target_once_before_writing() {
    let w = world("Standard", "");
    let f = w.dir.write("feed.json", feed(&[P1, P2], 10));
    w.run(&[
        "plan",
        "--feed-file",
        f.to_str().expect("utf-8"),
        "--out",
        "plan.json",
    ])
    .assert_code(0);
    w.arm.take_requests();
    w.run(&["apply", "plan.json"]).assert_code(0);
    let applied = w.arm.take_requests();
    // Namespace: GET namespace, GET rules, PUT. Account: GET, PATCH.
    assert_eq!(per_resource(&applied), (3, 3, 2), "{applied:#?}");
}

#[test]
fn plan_with_no_targets_exits_0_and_prints_the_feed_summary() {
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20210106.json.gz");
    let feed = feed.to_str().expect("utf-8");
    let human = dir.run(&["plan", "--feed-file", feed]);
    human.assert_code(0);
    assert!(
        human.stdout.contains("AzureDigitalTwins"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("changeNumber 128"),
        "{}",
        human.stdout
    );
    let json = dir.run(&["--output", "json", "plan", "--feed-file", feed]);
    json.assert_code(0);
    let doc = json.json();
    assert_eq!(doc["targets"], json!([]));
    assert_eq!(doc["change_number"], 128);
}

#[test]
fn plan_takes_the_feed_flags_sync_takes() {
    let w = world("Standard", "");
    w.sync(&[P1], 20, &[]).assert_code(0);
    let older = w.dir.write("old.json", feed(&[P1, P2], 19));
    let older = older.to_str().expect("utf-8");
    let refused = w.run(&["plan", "--feed-file", older]);
    refused.assert_code(3);
    assert!(
        refused.stderr.contains("--allow-regression"),
        "{}",
        refused.stderr
    );
    let run = w.run(&["plan", "--feed-file", older, "--allow-regression"]);
    run.assert_code(0);
    assert_eq!(
        w.target(&run.json(), "adt-events")["plan"]["add"],
        json!([P2])
    );
    // --feed-url and --feed-file are the same flags as sync's.
    let both = w.run(&[
        "plan",
        "--feed-file",
        older,
        "--feed-url",
        "https://example.com/f.json",
    ]);
    both.assert_code(2);
}

#[test]
fn apply_target_applies_part_of_a_saved_plan() {
    let w = world("Standard", "");
    let f = w.dir.write("feed.json", feed(&[P1, P2], 10));
    w.run(&[
        "plan",
        "--feed-file",
        f.to_str().expect("utf-8"),
        "--out",
        "plan.json",
    ])
    .assert_code(0);
    let run = w.run(&["apply", "plan.json", "--target", "adt-queue"]);
    run.assert_code(0);
    let reports = run.json();
    let names: Vec<&str> = reports
        .as_array()
        .expect("reports")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["adt-queue"]);
    assert_eq!(w.arm.writes().len(), 1, "{:?}", w.arm.writes());
    assert!(masks(&w.arm.rule_set(SB, "adt-sb")["ipRules"], "ipMask").contains(&P1.to_owned()));
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec!["1.1.1.1"]
    );
    // The rest of the plan still applies later.
    w.run(&["apply", "plan.json", "--target", "adt-events"])
        .assert_code(0);
    assert!(masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask").contains(&P1.to_owned()));
    let missing = w.run(&["apply", "plan.json", "--target", "nope"]);
    missing.assert_code(2);
}

#[test]
fn adopt_takes_over_what_sync_would_own_under_a_summarizing_fit() {
    let w = world("Standard", "overflow = \"summarize\"\n");
    let real = w.dir.fixture("ServiceTags_Public_20251106.json.gz");
    let real = real.to_str().expect("utf-8");
    let plan = w.run(&["plan", "--target", "adt-events", "--feed-file", real]);
    plan.assert_code(0);
    let plan = plan.json();
    let eh = w.target(&plan, "adt-events");
    assert_eq!(eh["fit"]["policy"], "summarize");
    // A summarized block (it admits addresses outside the tag), already
    // present as someone else's rule.
    let block = eh["fit"]["over_admitting"][0]["block"]
        .as_str()
        .expect("a summarized block")
        .to_owned();
    let exact = tag_prefixes(&fixture_bytes("ServiceTags_Public_20251106.json.gz"), ADT);
    assert!(
        !exact.contains(&block),
        "{block} is not a prefix of the tag"
    );
    let mut rules = w.arm.rule_set(EH, "adt-eh");
    rules["ipRules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"ipMask": block, "action": "Allow"}));
    w.arm.set_rule_set(EH, "adt-eh", rules);

    let adopt = w.run(&["targets", "adopt", "adt-events"]);
    adopt.assert_code(0);
    assert_eq!(adopt.json()["adopted"], json!([block]));
    // sync now owns it: it is kept as an owned rule, not reported foreign.
    let run = w.run(&["sync", "--target", "adt-events", "--feed-file", real]);
    run.assert_code(0);
    let report = run.json();
    let eh = w.target(&report, "adt-events");
    assert!(strings(&eh["plan"]["keep"]).contains(&block), "{eh}");
    assert_eq!(strings(&eh["plan"]["foreign"]), vec!["1.1.1.1/32"]);
}

#[test]
fn targets_check_shows_the_warnings_plan_shows() {
    let extra = format!(
        "[[targets]]\nname = \"we-store\"\nresource_id = \"{}\"\nregions = [\"westeurope\"]\n",
        storage_id("adtwesteurope")
    );
    let w = world("Standard", &extra);
    w.arm.add_storage(
        "adtwesteurope",
        "westeurope",
        json!({
        "bypass": "AzureServices", "resourceAccessRules": [], "virtualNetworkRules": [],
        "ipRules": [], "defaultAction": "Deny"}),
    );
    let before = w.run(&["targets", "check", "--target", "we-store"]);
    before.assert_code(0);
    assert!(
        before.json()[0]["warnings"]
            .to_string()
            .contains("no tags are recorded yet"),
        "{}",
        before.stdout
    );
    let f = w.dir.write("feed.json", feed(&[P1], 10));
    let plan = w.run(&[
        "plan",
        "--feed-file",
        f.to_str().expect("utf-8"),
        "--target",
        "we-store",
    ]);
    plan.assert_code(0);
    let planned: BTreeSet<String> = strings(&w.target(&plan.json(), "we-store")["warnings"])
        .into_iter()
        .collect();
    assert!(
        planned
            .iter()
            .any(|w| w.contains("the storage account is in westeurope")),
        "{planned:?}"
    );
    let check = w.run(&["targets", "check", "--target", "we-store"]);
    check.assert_code(0);
    let checked: BTreeSet<String> = strings(&check.json()[0]["warnings"]).into_iter().collect();
    assert!(
        planned.is_subset(&checked),
        "plan {planned:?}\ncheck {checked:?}"
    );
}

#[test]
fn human_plans_close_with_a_summary_and_refusals_lead_with_their_reason() {
    let w = world("Basic", "");
    let f = w.dir.write("feed.json", feed(&[P1, P2], 10));
    let identity = w.arm.identity_env();
    let env: Vec<(&str, &str)> = identity
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let run = w.dir.run_with(
        &[
            "--config",
            &w.cfg,
            "plan",
            "--feed-file",
            f.to_str().expect("utf-8"),
            "--out",
            "p.json",
        ],
        &env,
    );
    run.assert_code(6);
    let last = run.stdout.lines().last().expect("output");
    assert_eq!(
        last, "3 targets: 2 to change (+4 -0 rules), 0 unchanged, 1 refused, 0 failed",
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("target adt-events (event-hubs): refused\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("refused (tier): Event Hubs Basic"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("saved the plan to p.json"),
        "{}",
        run.stderr
    );
}
