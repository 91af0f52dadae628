//! Azure fidelity: warnings, hints and IPv6 endpoints as the specs and docs
//! say, and a fake Resource Manager that answers as Azure would.

use std::io::{Read, Write};

use serde_json::{Value, json};

use crate::fake_arm::*;
use crate::fake_http::Response;
use crate::world::*;

#[test]
fn every_storage_target_is_warned_about_same_region_traffic() {
    let w = world("Standard", "");
    let run = w.sync(&[P1], 10, &["--target", "adt-deadletter"]);
    run.assert_code(0);
    let warnings = w.target(&run.json(), "adt-deadletter")["warnings"].to_string();
    assert!(warnings.contains("is in northeurope"), "{warnings}");
    assert!(warnings.contains("resource instance rule"), "{warnings}");
    let check = w.run(&["targets", "check", "--target", "adt-deadletter"]);
    check.assert_code(0);
    assert!(
        check.json()[0]["warnings"]
            .to_string()
            .contains("is in northeurope"),
        "{}",
        check.stdout
    );
}

#[test]
fn a_linked_authorization_failure_names_the_subnet_permission() {
    let w = world("Standard", "");
    w.arm.fail(
        "networkrulesets",
        "PUT",
        Response::json(
            403,
            json!({"error": {"code": "LinkedAuthorizationFailed", "message":
                "The client 'x' with object id 'y' has permission to perform action 'Microsoft.EventHub/namespaces/networkRuleSets/write' on scope '/subscriptions/s/resourceGroups/rg-adt/providers/Microsoft.EventHub/namespaces/adt-eh/networkRuleSets/default'; however, it does not have permission to perform action(s) 'Microsoft.Network/virtualNetworks/subnets/joinViaServiceEndpoint/action' on the linked scope(s) '/subscriptions/s/resourceGroups/rg-adt/providers/Microsoft.Network/virtualNetworks/vnet-eh/subnets/default'."}})
            .to_string(),
        ),
    );
    let run = w.sync(&[P1], 10, &["--target", "adt-events"]);
    run.assert_code(5);
    let error = w.target(&run.json(), "adt-events")["error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(
        error.contains("vnet-eh/subnets/default"),
        "Azure's scope passes through: {error}"
    );
    assert!(
        error.contains(
            "grant `Microsoft.Network/virtualNetworks/subnets/joinViaServiceEndpoint/action`"
        ),
        "{error}"
    );
    assert!(
        !error.contains("needs the permission `Microsoft.EventHub"),
        "{error}"
    );
}

#[test]
fn a_stale_resource_access_rule_is_named_as_what_blocks_the_update() {
    let w = world("Standard", "");
    w.arm.fail(
        "storageaccounts",
        "PATCH",
        Response::json(
            400,
            r#"{"error": {"code": "InvalidValuesForRequestParameters", "message": "Values for request parameters are invalid: networkAcls.resourceAccessRules[*].resourceId."}}"#,
        ),
    );
    let run = w.sync(&[P1], 10, &["--target", "adt-deadletter"]);
    run.assert_code(5);
    let error = w.target(&run.json(), "adt-deadletter")["error"].to_string();
    assert!(
        error.contains("resource access rule of this account is no longer valid"),
        "{error}"
    );
}

#[test]
fn ipv6_rules_reach_an_event_hubs_namespace_only_with_ipv6_endpoints() {
    let w = world("Standard", "ipv6 = true\n");
    let v6 = "2603:1000:4::/64";
    let run = w.sync(&[P1, v6], 10, &["--target", "adt-events"]);
    run.assert_code(0);
    let eh = w.target(&run.json(), "adt-events").clone();
    assert!(
        eh["warnings"].to_string().contains("no IPv6 endpoints"),
        "{eh}"
    );
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec!["1.1.1.1", P1]
    );
    // The namespace gets IPv6 endpoints: now the rule admits something.
    {
        let id = namespace_id(EH, "adt-eh").to_lowercase();
        let mut st = w.arm.state.lock().expect("lock");
        st.resources.get_mut(&id).expect("namespace")["properties"]["ipV6Enabled"] = json!(true);
    }
    w.sync(&[P1, v6], 10, &["--target", "adt-events"])
        .assert_code(0);
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec!["1.1.1.1", P1, v6]
    );
}

/// One raw request to the fake, authorized like tagsync's.
fn raw(arm: &FakeArm, method: &str, path: &str, body: &Value) -> (u16, String) {
    let base = arm.base();
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    let body = body.to_string();
    write!(
        s,
        "{method} {path}?api-version=2024-01-01 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    // Read one response: the head, then Content-Length bytes (the fake
    // keeps the connection open).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let text = loop {
        let n = s.read(&mut chunk).expect("read");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                break text;
            }
        }
        assert!(n > 0, "connection closed early: {text}");
    };
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, text)
}

#[test]
fn the_fake_answers_as_azure_would() {
    let w = world("Basic", "");
    let rules = |provider: &str, name: &str| {
        format!("{}/networkRuleSets/default", namespace_id(provider, name))
    };
    let props = |ip: Value| {
        json!({"properties": {"publicNetworkAccess": "Enabled", "defaultAction": "Deny",
               "virtualNetworkRules": [], "ipRules": ip}})
    };
    // No IP rules on a Basic namespace.
    let (status, _) = raw(
        &w.arm,
        "PUT",
        &rules(EH, "adt-eh"),
        &props(json!([{"ipMask": "1.1.1.1", "action": "Allow"}])),
    );
    assert_eq!(status, 400);
    // Service Bus holds IPv4 only; no duplicates; Allow is the only action.
    for bad in [
        json!([{"ipMask": "2603:1000::/48", "action": "Allow"}]),
        json!([{"ipMask": "1.1.1.1", "action": "Allow"}, {"ipMask": "1.1.1.1/32", "action": "Allow"}]),
        json!([{"ipMask": "1.1.1.1", "action": "Deny"}]),
    ] {
        let (status, text) = raw(&w.arm, "PUT", &rules(SB, "adt-sb"), &props(bad.clone()));
        assert_eq!(status, 400, "{bad}: {text}");
    }
    // An omitted publicNetworkAccess takes the spec default, Enabled.
    let (status, _) = raw(
        &w.arm,
        "PUT",
        &rules(SB, "adt-sb"),
        &json!({"properties": {"defaultAction": "Deny", "virtualNetworkRules": [],
                "ipRules": [{"ipMask": "1.1.1.1", "action": "Allow"}]}}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        w.arm.rule_set(SB, "adt-sb")["publicNetworkAccess"],
        "Enabled"
    );
    // A Storage PATCH without networkAcls is legal and changes none of them.
    let before = w.arm.storage_acls("adtdeadletter");
    let (status, _) = raw(
        &w.arm,
        "PATCH",
        &storage_id("adtdeadletter"),
        &json!({"properties": {"minimumTlsVersion": "TLS1_2"}}),
    );
    assert_eq!(status, 200);
    assert_eq!(w.arm.storage_acls("adtdeadletter"), before);
}
