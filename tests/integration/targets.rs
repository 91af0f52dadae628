//! End to end through the real binary: the feed, the plan and the writes to
//! one target of each kind on the fake Resource Manager, with managed
//! identity tokens from the fake identity endpoint.

use serde_json::{Value, json};

use crate::fake_arm::*;
use crate::fake_http::Response;
use crate::util::*;
use crate::world::*;

#[test]
fn sync_writes_owned_rules_keeps_everything_else_and_a_second_sync_writes_nothing() {
    let w = world("Standard", "");
    let run = w.sync(&[P1, P2, P3, V6], 10, &[]);
    run.assert_code(0);
    let report = run.json();
    for name in ["adt-events", "adt-queue", "adt-deadletter"] {
        assert_eq!(
            w.target(&report, name)["outcome"],
            "applied",
            "{name}: {report}"
        );
    }

    // Event Hubs: foreign rule first and untouched, ours appended, IPv6 left out.
    let eh = w.arm.rule_set(EH, "adt-eh");
    assert_eq!(
        masks(&eh["ipRules"], "ipMask"),
        vec!["1.1.1.1", P3, P1, "20.39.2.134"]
    );
    assert_eq!(eh["defaultAction"], "Deny");
    assert_eq!(eh["publicNetworkAccess"], "Enabled");
    assert_eq!(eh["trustedServiceAccessEnabled"], false);
    let subnet = eh["virtualNetworkRules"][0]["subnet"]["id"]
        .as_str()
        .expect("subnet");
    assert!(subnet.eq_ignore_ascii_case(&subnet_id("vnet-eh")));
    assert_eq!(
        eh["virtualNetworkRules"][0]["ignoreMissingVnetServiceEndpoint"],
        true
    );
    let warnings = w.target(&report, "adt-events")["warnings"].to_string();
    assert!(
        warnings.contains("1 IPv6 prefixes are not written"),
        "{warnings}"
    );

    // Service Bus: the same, its VNet rule kept.
    let sb = w.arm.rule_set(SB, "adt-sb");
    assert_eq!(
        masks(&sb["ipRules"], "ipMask"),
        vec!["2.2.2.0/24", P3, P1, "20.39.2.134"]
    );
    assert_eq!(sb["virtualNetworkRules"].as_array().expect("vnet").len(), 1);

    // Storage: the /31 as two addresses, the /32 bare; other ACL fields as they were.
    let acls = w.arm.storage_acls("adtdeadletter");
    assert_eq!(
        masks(&acls["ipRules"], "value"),
        vec![
            "25.1.2.3",
            "4.207.251.102",
            "4.207.251.103",
            P1,
            "20.39.2.134"
        ]
    );
    assert_eq!(acls["bypass"], "AzureServices");
    assert_eq!(acls["defaultAction"], "Deny");
    assert_eq!(
        acls["virtualNetworkRules"],
        storage_acls()["virtualNetworkRules"]
    );
    assert_eq!(w.arm.writes().len(), 3);

    // The same feed again: no write at all.
    let again = w.sync(&[P1, P2, P3, V6], 10, &[]);
    again.assert_code(0);
    let again = again.json();
    for name in ["adt-events", "adt-queue", "adt-deadletter"] {
        assert_eq!(w.target(&again, name)["outcome"], "unchanged");
    }
    assert_eq!(
        w.arm.writes().len(),
        3,
        "a second sync makes zero write calls"
    );
}

#[test]
fn a_tag_change_adds_at_once_and_removes_after_the_grace_period() {
    let w = world("Standard", "");
    w.sync(&[P1, P2, P3], 10, &["--target", "adt-events"])
        .assert_code(0);
    let second = w.sync(&[P2, P3, P4], 11, &["--target", "adt-events"]);
    second.assert_code(0);
    let second = second.json();
    let eh = w.target(&second, "adt-events");
    assert_eq!(eh["plan"]["add"], json!([P4]));
    assert_eq!(eh["plan"]["remove"], json!([]));
    assert_eq!(eh["plan"]["pending_removal"], json!([P1]));
    assert!(masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask").contains(&P1.to_owned()));

    // A week later (history and ledger say P1 was last in the tag long ago): removed.
    w.age_history();
    let third = w.sync(&[P2, P3, P4], 11, &["--target", "adt-events"]);
    third.assert_code(0);
    let third = third.json();
    assert_eq!(
        w.target(&third, "adt-events")["plan"]["remove"],
        json!([P1])
    );
    let live = masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask");
    assert_eq!(live, vec!["1.1.1.1", P3, "20.39.2.134", P4]);
}

#[test]
fn a_guard_refusal_writes_nothing_and_force_lifts_the_ratio_guard() {
    let w = world("Standard", "");
    w.sync(&[P1, P2, P3], 10, &["--target", "adt-events"])
        .assert_code(0);
    w.age_history();
    let writes = w.arm.writes().len();
    let refused = w.sync(&[P4], 11, &["--target", "adt-events"]);
    refused.assert_code(6);
    let report = refused.json();
    let eh = w.target(&report, "adt-events");
    assert_eq!(eh["outcome"], "refused");
    assert_eq!(eh["guard"], "removal-ratio");
    assert!(
        eh["error"]
            .as_str()
            .expect("message")
            .contains("removes 3 of the 3 owned rules")
    );
    assert_eq!(w.arm.writes().len(), writes, "nothing written");

    let forced = w.sync(&[P4], 11, &["--target", "adt-events", "--force"]);
    forced.assert_code(0);
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec!["1.1.1.1", P4]
    );
}

#[test]
fn an_empty_rule_set_is_never_written_to_a_namespace() {
    let w = world("Standard", "");
    // No foreign rules and no VNet rules: everything left would be ours.
    w.arm.set_rule_set(
        EH,
        "adt-eh",
        json!({"publicNetworkAccess": "Enabled", "defaultAction": "Deny",
        "virtualNetworkRules": [], "ipRules": [], "trustedServiceAccessEnabled": false}),
    );
    w.sync(&[P1], 10, &["--target", "adt-events"])
        .assert_code(0);
    w.age_history();
    // The tag now holds only IPv6, which this target does not take.
    let run = w.sync(&[V6], 11, &["--target", "adt-events", "--force"]);
    run.assert_code(6);
    let report = run.json();
    assert_eq!(w.target(&report, "adt-events")["guard"], "empty-rule-set");
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec![P1]
    );
}

#[test]
fn one_failing_target_does_not_stop_the_others() {
    let w = world("Standard", "");
    for _ in 0..3 {
        w.arm.fail(
            "microsoft.servicebus",
            "PUT",
            Response::json(
                500,
                r#"{"error":{"code":"InternalServerError","message":"boom"}}"#,
            ),
        );
    }
    let run = w.sync(&[P1, P2], 10, &[]);
    run.assert_code(5);
    let report = run.json();
    assert_eq!(w.target(&report, "adt-queue")["outcome"], "failed");
    assert!(
        w.target(&report, "adt-queue")["error"]
            .as_str()
            .expect("error")
            .contains("InternalServerError")
    );
    assert_eq!(w.target(&report, "adt-events")["outcome"], "applied");
    assert_eq!(w.target(&report, "adt-deadletter")["outcome"], "applied");
    assert_eq!(
        masks(&w.arm.rule_set(SB, "adt-sb")["ipRules"], "ipMask"),
        vec!["2.2.2.0/24"]
    );
}

#[test]
fn throttling_and_conflicts_are_retried_honouring_retry_after() {
    let w = world("Standard", "");
    w.arm.fail(
        "microsoft.eventhub",
        "PUT",
        Response::json(
            429,
            r#"{"error":{"code":"TooManyRequests","message":"throttled"}}"#,
        )
        .header("Retry-After", "1"),
    );
    w.arm.fail(
        "microsoft.servicebus",
        "PUT",
        Response::json(
            429,
            r#"{"error":{"code":"Conflict","message":"SubCode=40901. Another conflicting operation is in progress."}}"#,
        ),
    );
    let started = std::time::Instant::now();
    let run = w.sync(&[P1], 10, &[]);
    run.assert_code(0);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert!(run.stderr.contains("TooManyRequests"), "{}", run.stderr);
    assert_eq!(w.arm.writes().len(), 3);
}

#[test]
fn a_basic_namespace_is_refused_before_any_write() {
    let w = world("Basic", "");
    let run = w.sync(&[P1], 10, &["--target", "adt-events"]);
    run.assert_code(6);
    let report = run.json();
    let eh = w.target(&report, "adt-events");
    assert_eq!(eh["guard"], "tier");
    assert!(eh["error"].as_str().expect("message").contains("Basic"));
    assert!(w.arm.writes().is_empty());
}

#[test]
fn a_saved_plan_applies_later_and_a_changed_target_is_refused() {
    let w = world("Standard", "");
    let f = w.dir.write("feed.json", feed(&[P1, P2], 10));
    let plan = w.run(&[
        "plan",
        "--feed-file",
        f.to_str().expect("utf-8"),
        "--out",
        "plan.json",
    ]);
    plan.assert_code(0);
    assert!(w.arm.writes().is_empty(), "plan writes nothing");
    assert_eq!(w.target(&plan.json(), "adt-events")["outcome"], "planned");
    let applied = w.run(&["apply", "plan.json"]);
    applied.assert_code(0);
    let applied = applied.json();
    assert!(
        applied
            .as_array()
            .expect("reports")
            .iter()
            .all(|t| t["outcome"] == "applied"),
        "{applied}"
    );
    assert_eq!(w.arm.writes().len(), 3);

    // A new plan, then someone edits the Event Hubs rules before it is applied.
    let f = w.dir.write("feed.json", feed(&[P1, P2, P4], 11));
    w.run(&[
        "plan",
        "--feed-file",
        f.to_str().expect("utf-8"),
        "--out",
        "plan2.json",
    ])
    .assert_code(0);
    let mut edited = w.arm.rule_set(EH, "adt-eh");
    edited["ipRules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"ipMask": "3.3.3.3", "action": "Allow"}));
    w.arm.set_rule_set(EH, "adt-eh", edited);
    let run = w.run(&["apply", "plan2.json"]);
    run.assert_code(6);
    let reports = run.json();
    let eh = reports
        .as_array()
        .expect("reports")
        .iter()
        .find(|t| t["name"] == "adt-events")
        .expect("eh");
    assert_eq!(eh["guard"], "stale-plan");
    assert!(!masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask").contains(&P4.to_owned()));
    assert!(masks(&w.arm.rule_set(SB, "adt-sb")["ipRules"], "ipMask").contains(&P4.to_owned()));
}

#[test]
fn foreign_rules_stay_foreign_until_adopted_and_release_forgets_them() {
    let w = world("Standard", "");
    let mut rules = eh_rules();
    rules["ipRules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"ipMask": P1, "action": "Allow"}));
    w.arm.set_rule_set(EH, "adt-eh", rules);
    let run = w.sync(&[P1, P2], 10, &["--target", "adt-events"]);
    run.assert_code(0);
    let report = run.json();
    let eh = w.target(&report, "adt-events");
    assert_eq!(eh["plan"]["desired_foreign"], json!([P1]));
    assert_eq!(eh["plan"]["add"], json!([P2]));

    let adopt = w.run(&["targets", "adopt", "adt-events"]);
    adopt.assert_code(0);
    assert_eq!(adopt.json()["adopted"], json!([P1]));
    let check = w.run(&["targets", "check", "--target", "adt-events"]);
    check.assert_code(0);
    let check = check.json();
    assert_eq!(check[0]["owned"], 2);
    assert_eq!(check[0]["foreign"], 1);
    assert_eq!(check[0]["budget"], 128);
    assert_eq!(check[0]["left"], 125);

    let release = w.run(&["targets", "release", "adt-events", P1]);
    release.assert_code(0);
    assert_eq!(release.json()["released"], 1);
    let check = w
        .run(&["targets", "check", "--target", "adt-events"])
        .json();
    assert_eq!(check[0]["owned"], 1);
}

#[test]
fn targets_check_reports_tier_rules_and_warnings() {
    let w = world("Standard", "");
    let mut rules = sb_rules();
    rules["defaultAction"] = json!("Allow");
    rules["trustedServiceAccessEnabled"] = json!(true);
    w.arm.set_rule_set(SB, "adt-sb", rules);
    let run = w.run(&["targets", "check"]);
    run.assert_code(0);
    let checks = run.json();
    let sb = checks
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "adt-queue")
        .expect("sb");
    assert_eq!(sb["sku"], "Premium");
    assert_eq!(
        sb["used"], 2,
        "one IP and one VNet rule share the Service Bus budget"
    );
    let warnings = sb["warnings"].to_string();
    assert!(warnings.contains("defaultAction is Allow"), "{warnings}");
    assert!(
        warnings.contains("trusted Microsoft services"),
        "{warnings}"
    );
}

#[test]
fn secrets_never_reach_logs_output_or_the_database() {
    let w = world("Standard", "");
    let run = w.sync(&[P1], 10, &["-vv", "--log-format", "json"]);
    run.assert_code(0);
    for secret in [TOKEN, IDENTITY_HEADER] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{secret} leaked"
        );
    }
    let db = std::fs::read(w.dir.db()).expect("db");
    let wal = std::fs::read(w.dir.path("tagsync.db-wal")).unwrap_or_default();
    for secret in [TOKEN, IDENTITY_HEADER] {
        let found = |bytes: &[u8]| bytes.windows(secret.len()).any(|x| x == secret.as_bytes());
        assert!(!found(&db) && !found(&wal), "{secret} in the database");
    }

    // A client secret that cannot be used: the error says why, never the secret.
    let secret = "cl13nt-s3cret-value-7d";
    let f = w.dir.write("feed.json", feed(&[P1], 10));
    let cfg = w.dir.write(
        "secret.toml",
        std::fs::read_to_string(&w.cfg)
            .expect("cfg")
            .replace("managed-identity", "client-secret"),
    );
    let run = w.dir.run_with(
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "-vv",
            "sync",
            "--feed-file",
            f.to_str().expect("utf-8"),
        ],
        &[
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-00000000c11e"),
            ("AZURE_CLIENT_SECRET", secret),
            ("AZURE_AUTHORITY_HOST", "https://127.0.0.1:9"),
        ],
    );
    run.assert_code(5);
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "client secret leaked:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.to_lowercase().contains("token"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_targets_are_config_errors_naming_them() {
    let dir = TestDir::new();
    let cases = [
        (
            "resource_id = \"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Sql/servers/db\"",
            "Microsoft.Sql/servers",
        ),
        ("resource_id = \"adt-eh\"", "is not a resource id"),
        (
            "resource_id = \"/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.EventHub/namespaces/<ns>\"",
            "placeholder",
        ),
        (
            "resource_id = \"/subscriptions/my-sub/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns\"",
            "is not a subscription id",
        ),
        (
            "resource_id = \"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns/eventhubs/adt\"",
            "use `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns`",
        ),
    ];
    for (line, expect) in cases {
        let cfg = dir.write("bad.toml", format!("[[targets]]\nname = \"t1\"\n{line}\n"));
        let run = dir.run(&["--config", cfg.to_str().expect("utf-8"), "config", "check"]);
        run.assert_code(2);
        assert!(
            run.stderr.contains(expect) && run.stderr.contains("`t1`"),
            "{}",
            run.stderr
        );
    }
    let cfg = dir.write("bad.toml", "[azure]\nclient_secret = \"x\"\n");
    let run = dir.run(&["--config", cfg.to_str().expect("utf-8"), "config", "check"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("never read from the configuration file"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_discovery_api_source_follows_next_link_and_feeds_the_targets() {
    let w = world("Standard", "");
    let tag = |name: &str, region: &str, prefixes: &[&str]| {
        json!({"name": name, "id": name, "properties": {"changeNumber": "12", "region": region,
               "systemService": "AzureDigitalTwins", "addressPrefixes": prefixes}})
    };
    let page = |values: Vec<Value>| {
        json!({"name": "public", "id": format!("/subscriptions/{SUB}/providers/Microsoft.Network/serviceTags/public"),
               "type": "Microsoft.Network/serviceTags", "changeNumber": "380", "cloud": "Public", "values": values})
    };
    w.arm.state.lock().expect("lock").service_tag_pages = vec![
        page(vec![tag(
            "AzureDigitalTwins.WestEurope",
            "westeurope",
            &["20.61.98.144/29"],
        )]),
        page(vec![tag("AzureDigitalTwins", "", &[P1, P2])]),
    ];
    let run = w.dir.run_with(
        &[
            "--config",
            &w.cfg,
            "--output",
            "json",
            "sync",
            "--target",
            "adt-events",
        ],
        &[
            ("TAGSYNC_FEED_SOURCE", "discovery-api"),
            ("TAGSYNC_FEED_LOCATION", "westeurope"),
            ("AZURE_SUBSCRIPTION_ID", SUB),
            ("IDENTITY_ENDPOINT", &w.arm.server.url("/msi/token")),
            ("IDENTITY_HEADER", IDENTITY_HEADER),
        ],
    );
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["feed"]["change_number"], 380);
    assert_eq!(report["feed"]["tag_count"], 2, "both pages were read");
    assert_eq!(report["tags"][0]["name"], "AzureDigitalTwins");
    assert_eq!(
        w.target(&report, "adt-events")["plan"]["add"],
        json!([P1, P2])
    );

    // Without a location the source is a configuration error.
    let cfg = w.dir.write(
        "no-loc.toml",
        "[feed]\nsource = \"discovery-api\"\nsubscription_id = \"s\"\n",
    );
    let run = w
        .dir
        .run(&["--config", cfg.to_str().expect("utf-8"), "config", "check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("needs [feed] location"),
        "{}",
        run.stderr
    );
}

#[test]
fn long_running_writes_slow_or_cut_answers_and_missing_permissions() {
    let w = world("Standard", "");
    w.arm.state.lock().expect("lock").async_writes = true;
    // Storage's first read is slower than the 2 s timeout; Event Hubs' first
    // write answer is cut off mid-body; Service Bus refuses the read.
    w.arm.fail(
        "microsoft.storage",
        "GET",
        Response::json(200, "{}").delayed(std::time::Duration::from_secs(3)),
    );
    w.arm.fail(
        "microsoft.eventhub/namespaces/adt-eh/networkrulesets",
        "PUT",
        Response::json(200, "{\"id\": \"x\", \"properties\": {}}").cut_after(5),
    );
    w.arm.fail(
        "microsoft.servicebus",
        "GET",
        Response::json(
            403,
            r#"{"error":{"code":"AuthorizationFailed","message":"The client does not have authorization to perform action 'Microsoft.ServiceBus/namespaces/read'."}}"#,
        ),
    );
    let run = w.sync(&[P1], 10, &[]);
    run.assert_code(5);
    let report = run.json();
    assert_eq!(
        w.target(&report, "adt-events")["outcome"],
        "applied",
        "{report}"
    );
    assert_eq!(
        w.target(&report, "adt-deadletter")["outcome"],
        "applied",
        "{report}"
    );
    let sb = w.target(&report, "adt-queue");
    assert_eq!(sb["outcome"], "failed");
    let error = sb["error"].as_str().expect("error");
    assert!(error.contains("HTTP 403 AuthorizationFailed"), "{error}");
    assert!(
        error.contains("`Microsoft.ServiceBus/namespaces/read`")
            && error.contains("Least privilege"),
        "{error}"
    );
    // The asynchronous Event Hubs write was polled to its end.
    assert!(w.arm.state.lock().expect("lock").operation_polls >= 2);
    assert!(masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask").contains(&P1.to_owned()));
}

#[test]
fn storage_addresses_split_from_a_31_wait_for_the_grace_period_of_the_31() {
    let w = world("Standard", "");
    w.sync(&[P1, P3], 10, &["--target", "adt-deadletter"])
        .assert_code(0);
    w.age("UPDATE ownership SET last_desired_at = '2020-01-01T00:00:00.000Z'");
    let run = w.sync(&[P1, P2], 11, &["--target", "adt-deadletter", "--force"]);
    run.assert_code(0);
    let report = run.json();
    let sa = w.target(&report, "adt-deadletter");
    // The history's /31 covers both written addresses, so both wait.
    assert_eq!(
        sa["plan"]["pending_removal"],
        json!(["4.207.251.102/32", "4.207.251.103/32"])
    );
    assert_eq!(sa["plan"]["remove"], json!([]));
}

#[test]
fn drift_after_a_write_is_a_failed_target_and_not_owned() {
    let w = world("Standard", "");
    w.arm.state.lock().expect("lock").drop_on_write = Some("20.39.2.134".into());
    let run = w.sync(&[P1, P2], 10, &["--target", "adt-events"]);
    // Answered 200 but not applied: never reported as success.
    run.assert_code(5);
    let report = run.json();
    let eh = w.target(&report, "adt-events");
    assert_eq!(eh["outcome"], "drifted");
    assert_eq!(eh["drift"], json!([P2]), "{eh}");
    assert!(
        eh["warnings"]
            .to_string()
            .contains("drift: after writing, 1 planned rules are missing")
    );
    // Recorded as what it was.
    let applies = w.run(&["history", "--target", "adt-events"]).json();
    assert_eq!(applies[0]["outcome"], "drifted", "{applies}");
    // Not owned, so the next run adds it again (and it sticks this time).
    let again = w.sync(&[P1, P2], 10, &["--target", "adt-events"]);
    again.assert_code(0);
    let again = again.json();
    assert_eq!(w.target(&again, "adt-events")["plan"]["add"], json!([P2]));
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec!["1.1.1.1", P1, "20.39.2.134"]
    );
}

#[test]
fn history_lists_a_targets_applies_and_config_check_its_targets() {
    let w = world("Standard", "");
    w.sync(&[P1, P2], 10, &["--target", "adt-events"])
        .assert_code(0);
    w.sync(&[P1, P2], 10, &["--target", "adt-events"])
        .assert_code(0);
    let applies = w.run(&["history", "--target", "adt-events"]);
    applies.assert_code(0);
    let applies = applies.json();
    let list = applies.as_array().expect("applies");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["outcome"], "unchanged");
    assert_eq!(list[1]["outcome"], "applied");
    assert_eq!(list[1]["added"], json!([P1, "20.39.2.134/32"]));
    assert_eq!(list[1]["rules_before"], 1);
    assert_eq!(list[1]["rules_after"], 3);
    let human = w
        .dir
        .run(&["--config", &w.cfg, "history", "--target", "adt-events"]);
    assert!(
        human.stdout.contains("+ 20.36.125.120/29"),
        "{}",
        human.stdout
    );

    let check = w.run(&["config", "check"]).json();
    let names: Vec<&str> = check["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["adt-events", "adt-queue", "adt-deadletter"]);
    assert_eq!(check["targets"][2]["kind"], "storage");
    assert_eq!(check["auth"], "managed-identity");
}
