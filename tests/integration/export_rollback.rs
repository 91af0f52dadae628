//! `export` is exactly what `sync` then writes, in each format (the
//! Terraform and Bicep files checked by small parsers of their syntax), and
//! `rollback` returns a target to an earlier owned set through the same
//! plan and guards, leaving foreign rules alone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use serde_json::{Map, Value, json};

use crate::fake_http::{FakeServer, Response};
use crate::world::*;

/// A parser for the subset of HCL (`.tfvars`) and Bicep (`.bicepparam`)
/// that literal values use: strings, numbers, null and booleans, lists and
/// objects. Anything else is a panic naming where it is.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    bicep: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, bicep: bool) -> Self {
        Self {
            s: text.as_bytes(),
            i: 0,
            bicep,
        }
    }

    fn fail(&self, what: &str) -> ! {
        let rest = String::from_utf8_lossy(&self.s[self.i..(self.i + 40).min(self.s.len())]);
        panic!("{what} at byte {}: {rest:?}", self.i)
    }

    /// Skips spaces, newlines, commas (HCL separators) and comments.
    fn skip(&mut self) {
        loop {
            match self.s.get(self.i) {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.i += 1,
                Some(b',') if !self.bicep => self.i += 1,
                Some(b'#') if !self.bicep => self.skip_line(),
                Some(b'/') if self.bicep && self.s.get(self.i + 1) == Some(&b'/') => {
                    self.skip_line()
                }
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        while self.s.get(self.i).is_some_and(|c| *c != b'\n') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.skip();
        if self.s.get(self.i) != Some(&c) {
            self.fail(&format!("expected `{}`", c as char));
        }
        self.i += 1;
    }

    fn ident(&mut self) -> String {
        self.skip();
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.i += 1;
        }
        if start == self.i {
            self.fail("expected a name");
        }
        String::from_utf8(self.s[start..self.i].to_vec()).expect("utf-8")
    }

    fn string(&mut self) -> String {
        self.skip();
        let quote = if self.bicep { b'\'' } else { b'"' };
        if self.s.get(self.i) != Some(&quote) {
            self.fail("expected a string");
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                self.fail("unterminated string")
            };
            self.i += 1;
            match c {
                b'\\' => {
                    let e = self.s.get(self.i).copied().unwrap_or(0);
                    self.i += 1;
                    out.push(match e {
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'\\' | b'\'' | b'"' | b'$' => e as char,
                        _ => self.fail("unknown escape"),
                    });
                }
                b'$' if self.s.get(self.i) == Some(&b'{') => self.fail("an interpolation"),
                b'\n' => self.fail("a newline in a string"),
                c if c == quote => return out,
                c => {
                    // Multi-byte UTF-8 passes through byte by byte.
                    let start = self.i - 1;
                    let len = match c {
                        0..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    self.i = start + len;
                    out.push_str(std::str::from_utf8(&self.s[start..self.i]).expect("utf-8"));
                }
            }
        }
    }

    fn key(&mut self) -> String {
        self.skip();
        match self.s.get(self.i) {
            Some(b'"' | b'\'') => self.string(),
            _ => self.ident(),
        }
    }

    fn value(&mut self) -> Value {
        self.skip();
        match self.s.get(self.i) {
            Some(b'"' | b'\'') => Value::String(self.string()),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip();
                    if self.s.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Value::Array(items);
                    }
                    items.push(self.value());
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut map = Map::new();
                loop {
                    self.skip();
                    if self.s.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Value::Object(map);
                    }
                    let k = self.key();
                    self.eat(if self.bicep { b':' } else { b'=' });
                    let v = self.value();
                    assert!(map.insert(k.clone(), v).is_none(), "key {k} twice");
                }
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'-')
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).expect("utf-8");
                json!(
                    text.parse::<i64>()
                        .unwrap_or_else(|_| self.fail("a number"))
                )
            }
            _ => match self.ident().as_str() {
                "null" => Value::Null,
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => self.fail(&format!("unexpected `{other}`")),
            },
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip();
        self.i >= self.s.len()
    }
}

/// A `.tfvars` file's assignments.
fn parse_tfvars(text: &str) -> Map<String, Value> {
    let mut p = Parser::new(text, false);
    let mut out = Map::new();
    while !p.at_end() {
        let name = p.ident();
        p.eat(b'=');
        out.insert(name, p.value());
    }
    out
}

/// A `.bicepparam` file's `using` path and parameters.
fn parse_bicepparam(text: &str) -> (String, Map<String, Value>) {
    let mut p = Parser::new(text, true);
    assert_eq!(p.ident(), "using");
    let using = p.string();
    let mut out = Map::new();
    while !p.at_end() {
        assert_eq!(p.ident(), "param");
        let name = p.ident();
        p.eat(b'=');
        out.insert(name, p.value());
    }
    (using, out)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// The live IP rules of a world's target, as stored.
fn live_rules(w: &World, target: &str) -> BTreeSet<String> {
    match target {
        "adt-events" => masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        "adt-queue" => masks(&w.arm.rule_set(SB, "adt-sb")["ipRules"], "ipMask"),
        _ => {
            let acls = w.arm.storage_acls("adtdeadletter");
            let mut all = masks(&acls["ipRules"], "value");
            if acls["ipv6Rules"].is_array() {
                all.extend(masks(&acls["ipv6Rules"], "value"));
            }
            all
        }
    }
    .into_iter()
    .collect()
}

#[test]
fn export_is_exactly_what_sync_then_writes_in_json_terraform_and_bicep() {
    let w = world("Standard", "ipv6 = true");
    w.sync(&[P1, P2, P3], 10, &[]).assert_code(0);
    // The tag changes: P2 and P3 leave (kept through their grace period),
    // P4 and an IPv6 prefix arrive, and someone adds a foreign rule.
    let mut eh = w.arm.rule_set(EH, "adt-eh");
    eh["ipRules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"ipMask": "9.9.9.0/24", "action": "Allow"}));
    w.arm.set_rule_set(EH, "adt-eh", eh);
    let feed_file = w.dir.write("feed.json", feed(&[P1, P4, V6], 11));
    let feed_arg = feed_file.to_str().expect("utf-8");
    let writes = w.arm.writes().len();

    let json_run = w.run(&["export", "--all", "--feed-file", feed_arg]);
    json_run.assert_code(0);
    let exports = json_run.json();
    let exports = exports.as_array().expect("--all gives a list");
    assert_eq!(exports.len(), 3);
    assert_eq!(
        w.arm.writes().len(),
        writes,
        "export writes nothing to Azure"
    );

    let tf_out = w.dir.path("rules.auto.tfvars");
    w.run(&[
        "export",
        "--all",
        "--format",
        "terraform",
        "--out",
        tf_out.to_str().expect("utf-8"),
        "--feed-file",
        feed_arg,
    ])
    .assert_code(0);
    let tfvars = parse_tfvars(&std::fs::read_to_string(&tf_out).expect("tfvars"));
    let bicep_run = w.run(&[
        "export",
        "--all",
        "--format",
        "bicep",
        "--bicep-template",
        "./firewall.bicep",
        "--feed-file",
        feed_arg,
    ]);
    bicep_run.assert_code(0);
    let (using, params) = parse_bicepparam(&bicep_run.stdout);
    assert_eq!(using, "./firewall.bicep");

    // The same feed through sync: what it writes is what export said.
    w.run(&["sync", "--feed-file", feed_arg]).assert_code(0);
    for e in exports {
        let name = e["target"].as_str().expect("name");
        assert_eq!(e["change_number"], 11);
        assert_eq!(e["outcome"], "planned");
        let rules = strings(&e["rules"]);
        let foreign = strings(&e["foreign"]);
        let both: BTreeSet<String> = rules.iter().chain(&foreign).cloned().collect();
        assert_eq!(both.len(), rules.len() + foreign.len(), "{name}: disjoint");
        assert_eq!(
            both,
            live_rules(&w, name),
            "{name}: export == what sync wrote"
        );

        let tf = &tfvars["tagsync_ip_rules"][name];
        assert_eq!(strings(&tf["rules"]), rules, "{name}: terraform");
        assert_eq!(strings(&tf["foreign"]), foreign, "{name}: terraform");
        assert_eq!(tf["resource_id"], e["resource_id"]);
        assert_eq!(tf["kind"], e["kind"]);
        assert_eq!(tf["change_number"], 11);

        let b = &params["tagsyncIpRules"][name];
        assert_eq!(strings(&b["rules"]), rules, "{name}: bicep");
        assert_eq!(strings(&b["foreign"]), foreign, "{name}: bicep");
        assert_eq!(b["resourceId"], e["resource_id"]);
    }
    // The kinds' own rule objects.
    let eh = &params["tagsyncIpRules"]["adt-events"];
    assert!(
        eh["properties"]["ipRules"]
            .as_array()
            .expect("rules")
            .contains(&json!({"ipMask": P4, "action": "Allow"})),
        "{eh}"
    );
    let export_eh = exports
        .iter()
        .find(|e| e["target"] == "adt-events")
        .expect("eh");
    assert_eq!(
        strings(&export_eh["foreign"]),
        vec!["1.1.1.1", "9.9.9.0/24"]
    );
    assert!(
        strings(&export_eh["rules"]).contains(&"20.39.2.134".to_owned()),
        "a rule inside its grace period is still wanted, in the kind's form"
    );
    let sa = &params["tagsyncIpRules"]["adt-deadletter"]["properties"];
    assert!(
        sa.get("ipv6Rules").is_none(),
        "no IPv6 on a target without ipv6 = true"
    );
    assert!(
        sa["ipRules"]
            .as_array()
            .expect("rules")
            .iter()
            .all(|r| r["action"] == "Allow" && r["value"].is_string())
    );
}

#[test]
fn export_of_a_refused_target_exports_nothing_for_it_and_says_why() {
    let w = world("Standard", "");
    w.sync(&[P1, P2, P3], 10, &[]).assert_code(0);
    w.age_history();
    let feed_file = w.dir.write("feed.json", feed(&[P4], 11));
    let feed_arg = feed_file.to_str().expect("utf-8");
    let one = w.run(&["export", "--target", "adt-events", "--feed-file", feed_arg]);
    one.assert_code(6);
    let e = one.json();
    assert!(e.is_object(), "one --target gives one object");
    assert_eq!(e["outcome"], "refused");
    assert_eq!(e["rules"], json!([]));
    assert!(
        one.stderr.contains("adt-events not exported"),
        "{}",
        one.stderr
    );

    let tf = w.run(&[
        "export",
        "--target",
        "adt-events",
        "--format",
        "terraform",
        "--feed-file",
        feed_arg,
    ]);
    tf.assert_code(6);
    let vars = parse_tfvars(&tf.stdout);
    assert_eq!(
        vars["tagsync_ip_rules"],
        json!({}),
        "no key: a pipeline reading it fails instead of emptying the firewall"
    );
    assert!(tf.stdout.contains("# adt-events not exported (refused)"));

    let none = w.run(&["export", "--feed-file", feed_arg]);
    none.assert_code(2);
}

#[test]
fn rollback_returns_a_target_to_an_earlier_owned_set_through_the_guards_and_leaves_foreign_rules() {
    let w = world("Standard", "");
    let server = {
        let up = Arc::new(AtomicU16::new(200));
        FakeServer::start(move |_| Response::new(up.load(Ordering::SeqCst), ""))
    };
    let mut cfg = std::fs::read_to_string(&w.cfg).expect("config");
    cfg.push_str(&format!(
        "\n[[notify]]\nname = \"ops\"\nurl = \"{}\"\nevents = [\"target.applied\"]\n",
        server.url("/hook")
    ));
    std::fs::write(&w.cfg, cfg).expect("config");
    let only = ["--target", "adt-events"];
    w.sync(&[P1, P2], 10, &only).assert_code(0);
    let applies = w.run(&["history", "--target", "adt-events"]).json();
    let first = applies[0]["apply_id"].as_i64().expect("apply id");

    // A foreign rule arrives, then the tag moves on.
    let mut eh = w.arm.rule_set(EH, "adt-eh");
    eh["ipRules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"ipMask": "9.9.9.0/24", "action": "Allow"}));
    w.arm.set_rule_set(EH, "adt-eh", eh);
    w.age_history();
    w.sync(&[P3, P4], 11, &["--target", "adt-events", "--force"])
        .assert_code(0);
    let moved = BTreeSet::from([
        "1.1.1.1".to_owned(),
        "9.9.9.0/24".to_owned(),
        P4.to_owned(),
        P3.to_owned(),
    ]);
    assert_eq!(live_rules(&w, "adt-events"), moved);
    let writes = w.arm.writes().len();
    let to = first.to_string();

    // --dry-run: the plan back, nothing written.
    let dry = w.run(&[
        "rollback",
        "--target",
        "adt-events",
        "--to",
        &to,
        "--dry-run",
        "--force",
    ]);
    dry.assert_code(0);
    let plan = &dry.json()[0];
    assert_eq!(plan["outcome"], "planned");
    assert_eq!(plan["plan"]["add"], json!([P1, P2]));
    assert_eq!(plan["plan"]["remove"], json!([P3, P4]));
    assert_eq!(w.arm.writes().len(), writes);

    // The guards hold: it removes every owned rule, so the ratio refuses.
    let refused = w.run(&["rollback", "--target", "adt-events", "--to", &to]);
    refused.assert_code(6);
    assert_eq!(refused.json()[0]["guard"], "removal-ratio");
    assert_eq!(w.arm.writes().len(), writes);

    let before = server.requests().len();
    let done = w.run(&["rollback", "--target", "adt-events", "--to", &to, "--force"]);
    done.assert_code(0);
    assert_eq!(done.json()[0]["outcome"], "applied");
    let back = BTreeSet::from([
        "1.1.1.1".to_owned(),
        "9.9.9.0/24".to_owned(),
        P1.to_owned(),
        "20.39.2.134".to_owned(),
    ]);
    assert_eq!(
        live_rules(&w, "adt-events"),
        back,
        "owned back, foreign kept"
    );
    let sent: Vec<Value> = server.requests()[before..]
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("event"))
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["data"]["rollback_to"], first);
    assert_eq!(sent[0]["data"]["removed"], json!([P3, P4]));

    // Rolled back, the target is owned as it was: a rollback to the same
    // apply changes nothing, and the next sync of the feed plans forward.
    let again = w.run(&["rollback", "--target", "adt-events", "--to", &to]);
    again.assert_code(0);
    assert_eq!(again.json()[0]["outcome"], "unchanged");

    // Bad ids name the problem.
    let missing = w.run(&["rollback", "--target", "adt-events", "--to", "99999"]);
    missing.assert_code(2);
    assert!(
        missing.stderr.contains("has no apply 99999"),
        "{}",
        missing.stderr
    );
    let other = w.run(&["history", "--target", "adt-queue"]).json();
    assert_eq!(other.as_array().map(Vec::len), Some(0));
    w.sync(&[P1], 12, &["--target", "adt-queue"]).assert_code(0);
    let queue = w.run(&["history", "--target", "adt-queue"]).json();
    let queue_apply = queue[0]["apply_id"].as_i64().expect("id").to_string();
    let wrong = w.run(&["rollback", "--target", "adt-events", "--to", &queue_apply]);
    wrong.assert_code(2);
}
