//! Event Grid topics and domains and Key Vaults, end to end against the
//! fake Resource Manager (shapes from the specs and recordings: Event
//! Grid's long-running PATCH answered 201 with a body and an operation URL,
//! or 200 with no body; Key Vault's whole-`networkAcls` PATCH).

use serde_json::{Value, json};

use crate::fake_arm::*;
use crate::world::*;

fn new_kinds() -> World {
    let extra = format!(
        "[[targets]]\nname = \"eg-topic\"\nresource_id = \"{}\"\n\n\
         [[targets]]\nname = \"eg-domain\"\nresource_id = \"{}\"\n\n\
         [[targets]]\nname = \"vault\"\nresource_id = \"{}\"\nmax_removal_ratio = 1.0\n",
        event_grid_id("topics", "adt-topic"),
        event_grid_id("domains", "adt-domain"),
        vault_id("adt-vault"),
    );
    let w = world("Standard", &extra);
    w.arm.add_event_grid(
        "topics",
        "adt-topic",
        "Enabled",
        json!([{"ipMask": "3.3.3.3", "action": "Allow"}]),
    );
    w.arm
        .add_event_grid("domains", "adt-domain", "Enabled", json!([]));
    w.arm.add_vault(
        "adt-vault",
        Some(json!({"bypass": "AzureServices", "defaultAction": "Deny",
                    "ipRules": [{"value": "4.4.4.0/24"}], "virtualNetworkRules": []})),
    );
    w
}

const NEW: [&str; 6] = [
    "--target",
    "eg-topic",
    "--target",
    "eg-domain",
    "--target",
    "vault",
];

fn rules(w: &World, id: &str, list: &str, key: &str) -> Vec<String> {
    let r = w.arm.resource(id);
    let rules: &Value = if list == "networkAcls" {
        &r["properties"]["networkAcls"]["ipRules"]
    } else {
        &r["properties"]["inboundIpRules"]
    };
    masks(rules, key)
}

#[test]
fn topics_domains_and_vaults_get_exact_rule_sets_and_a_second_run_writes_nothing() {
    for empty_200 in [false, true] {
        let w = new_kinds();
        w.arm.state.lock().expect("lock").event_grid_empty_200 = empty_200;
        let run = w.sync(&[P1, P2, P3], 10, &NEW);
        run.assert_code(0);
        let report = run.json();
        for t in ["eg-topic", "eg-domain", "vault"] {
            assert_eq!(w.target(&report, t)["outcome"], "applied", "{t}: {report}");
        }
        let topic = event_grid_id("topics", "adt-topic");
        assert_eq!(
            rules(&w, &topic, "inboundIpRules", "ipMask"),
            vec!["3.3.3.3", P3, P1, "20.39.2.134"],
            "the foreign rule first, ours after; a single address bare"
        );
        assert_eq!(
            rules(
                &w,
                &event_grid_id("domains", "adt-domain"),
                "inboundIpRules",
                "ipMask"
            ),
            vec![P3, P1, "20.39.2.134"]
        );
        // Key Vault: `{value}` only; the bare address came back as /32.
        let vault = w.arm.resource(&vault_id("adt-vault"));
        assert_eq!(
            vault["properties"]["networkAcls"]["ipRules"],
            json!([{"value": "4.4.4.0/24"}, {"value": P3}, {"value": P1}, {"value": "20.39.2.134/32"}])
        );
        assert_eq!(vault["properties"]["networkAcls"]["defaultAction"], "Deny");
        let sent = w
            .arm
            .state
            .lock()
            .expect("lock")
            .last_vault_patch
            .clone()
            .expect("patched");
        let keys: Vec<&String> = sent["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        assert_eq!(
            keys,
            vec!["networkAcls"],
            "never access policies or soft-delete fields"
        );

        let writes = w.arm.writes().len();
        let again = w.sync(&[P1, P2, P3], 10, &NEW);
        again.assert_code(0);
        for t in ["eg-topic", "eg-domain", "vault"] {
            assert_eq!(w.target(&again.json(), t)["outcome"], "unchanged", "{t}");
        }
        assert_eq!(
            w.arm.writes().len(),
            writes,
            "the second run writes nothing"
        );
    }
}

#[test]
fn an_emptying_feed_is_refused_on_each_new_kind() {
    let w = new_kinds();
    // A vault whose only IP rules will be tagsync's.
    w.arm.add_vault(
        "adt-vault",
        Some(json!({"bypass": "AzureServices", "defaultAction": "Deny",
                    "ipRules": [], "virtualNetworkRules": []})),
    );
    w.sync(&[P1], 10, &NEW).assert_code(0);
    w.age_history();
    // The tag now gives these IPv4-only kinds nothing they can hold.
    let run = w.sync(&["2603:1000:4::/64"], 11, &NEW);
    run.assert_code(6);
    let report = run.json();
    // The topic keeps its foreign rule, so only the ratio guard speaks;
    // the domain and the vault would be left with no rule at all.
    for (t, guard) in [
        ("eg-topic", "removal-ratio"),
        ("eg-domain", "empty-rule-set"),
        ("vault", "empty-rule-set"),
    ] {
        let r = w.target(&report, t);
        assert_eq!(r["outcome"], "refused", "{t}: {r}");
        assert_eq!(r["guard"], guard, "{t}");
    }
    assert!(
        w.target(&report, "vault")["error"]
            .as_str()
            .expect("error")
            .contains("locks out"),
        "{report}"
    );
    // The domain had no other rule: it keeps ours, so it never opens.
    assert_eq!(
        rules(
            &w,
            &event_grid_id("domains", "adt-domain"),
            "inboundIpRules",
            "ipMask"
        ),
        vec![P1]
    );
    // Forced, a vault may be closed to all but trusted services and VNets;
    // an Event Grid domain is still never opened.
    let forced = w.sync(
        &["2603:1000:4::/64"],
        12,
        &[NEW.as_slice(), &["--force"]].concat(),
    );
    let report = forced.json();
    assert_eq!(w.target(&report, "vault")["outcome"], "applied", "{report}");
    assert_eq!(w.target(&report, "eg-topic")["outcome"], "applied");
    assert_eq!(w.target(&report, "eg-domain")["outcome"], "refused");
    assert_eq!(
        rules(
            &w,
            &event_grid_id("topics", "adt-topic"),
            "inboundIpRules",
            "ipMask"
        ),
        vec!["3.3.3.3"]
    );
    assert_eq!(
        w.arm.resource(&vault_id("adt-vault"))["properties"]["networkAcls"]["ipRules"],
        json!([])
    );
}

#[test]
fn an_open_vault_gets_its_rules_with_allow_and_a_warning() {
    let extra = format!(
        "[[targets]]\nname = \"vault\"\nresource_id = \"{}\"\n",
        vault_id("open-vault")
    );
    let w = world("Standard", &extra);
    w.arm.add_vault("open-vault", None);
    let run = w.sync(&[P1], 10, &["--target", "vault"]);
    run.assert_code(0);
    let v = w.target(&run.json(), "vault").clone();
    assert_eq!(v["outcome"], "applied", "{v}");
    assert!(
        v["warnings"].to_string().contains("defaultAction is Allow"),
        "{v}"
    );
    let acls = &w.arm.resource(&vault_id("open-vault"))["properties"]["networkAcls"];
    assert_eq!(acls["defaultAction"], "Allow", "never changed by tagsync");
    assert_eq!(acls["ipRules"], json!([{"value": P1}]));
    let check = w.run(&["targets", "check", "--target", "vault"]);
    check.assert_code(0);
    assert_eq!(check.json()[0]["kind"], "key-vault");
}

#[test]
fn the_global_tag_does_not_fit_an_event_grid_topic_and_summarizing_fits_it() {
    let real = crate::util::fixture_bytes("ServiceTags_Public_20251106.json.gz");
    for (overflow, code, outcome) in [("fail", 6, "refused"), ("summarize", 0, "applied")] {
        let extra = format!(
            "[[targets]]\nname = \"eg-topic\"\nresource_id = \"{}\"\noverflow = \"{overflow}\"\n",
            event_grid_id("topics", "adt-topic")
        );
        let w = world("Standard", &extra);
        w.arm
            .add_event_grid("topics", "adt-topic", "Enabled", json!([]));
        let f = w.dir.write("real.json", &real);
        let run = w.run(&[
            "sync",
            "--target",
            "eg-topic",
            "--feed-file",
            f.to_str().expect("utf-8"),
        ]);
        run.assert_code(code);
        let t = w.target(&run.json(), "eg-topic").clone();
        assert_eq!(t["outcome"], outcome, "{overflow}: {t}");
        let written = rules(
            &w,
            &event_grid_id("topics", "adt-topic"),
            "inboundIpRules",
            "ipMask",
        );
        if overflow == "fail" {
            assert_eq!(t["guard"], "budget");
            assert!(
                t["error"]
                    .as_str()
                    .expect("error")
                    .contains("needs 289 rules but the target holds 128"),
                "{t}"
            );
            assert!(written.is_empty(), "nothing written");
        } else {
            assert!(
                written.len() <= 128 && !written.is_empty(),
                "{}",
                written.len()
            );
        }
    }
}
