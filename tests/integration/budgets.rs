//! Rule budgets with the real 2025-11 global tag (289 IPv4 prefixes, none
//! mergeable) against an Event Hubs namespace (128 IP rules).

use std::collections::BTreeSet;

use crate::util::*;
use crate::world::{EH, World, masks, world};
use ipnet::{IpNet, Ipv4Net};

fn v4_addresses(nets: impl IntoIterator<Item = Ipv4Net>) -> BTreeSet<u32> {
    nets.into_iter()
        .flat_map(|n| u32::from(n.network())..=u32::from(n.broadcast()))
        .collect()
}

fn adt_v4(feed: &[u8]) -> Vec<Ipv4Net> {
    tag_prefixes(feed, ADT)
        .iter()
        .filter_map(|p| match p.parse::<IpNet>() {
            Ok(IpNet::V4(n)) => Some(n),
            _ => None,
        })
        .collect()
}

fn sync_real_feed(w: &World, extra_env: &[(&str, &str)]) -> Run {
    let feed = w.dir.fixture("ServiceTags_Public_20251106.json.gz");
    w.run_env(
        &[
            "sync",
            "--target",
            "adt-events",
            "--feed-file",
            feed.to_str().expect("utf-8"),
        ],
        extra_env,
    )
}

#[test]
fn the_global_tag_is_refused_with_alternatives_when_it_does_not_fit() {
    let w = world("Standard", "");
    let run = sync_real_feed(&w, &[]);
    run.assert_code(6);
    let report = run.json();
    let eh = w.target(&report, "adt-events");
    assert_eq!(eh["guard"], "budget");
    let msg = eh["error"].as_str().expect("message");
    assert!(
        msg.contains("needs 290 rules but the target holds 128"),
        "{msg}"
    );
    assert!(msg.contains("regions = [\"westeurope\"]"), "{msg}");
    assert!(
        msg.contains("overflow = \"summarize\" fits it in 127 rules admitting"),
        "{msg}"
    );
    assert_eq!(eh["fit"]["policy"], "fail");
    assert_eq!(eh["fit"]["rules_needed"], 289);
    assert_eq!(eh["fit"]["room"], 127, "128 less the one foreign rule");
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec!["1.1.1.1"]
    );
}

#[test]
fn summarize_covers_every_address_within_the_budget() {
    let w = world("Standard", "overflow = \"summarize\"\n");
    let run = sync_real_feed(&w, &[]);
    run.assert_code(0);
    let report = run.json();
    let eh = w.target(&report, "adt-events");
    assert_eq!(eh["outcome"], "applied", "{eh}");
    let fit = &eh["fit"];
    assert_eq!(fit["policy"], "summarize");
    assert_eq!(fit["rules_after"], 127);
    let extra = fit["extra_addresses"].as_u64().expect("extra");
    assert!(extra > 0);
    let listed: u64 = fit["over_admitting"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| b["extra_addresses"].as_u64().expect("n"))
        .sum();
    assert_eq!(listed, extra, "the blocks account for every extra address");

    let live = masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask");
    assert_eq!(live.len(), 128);
    let live_nets: Vec<Ipv4Net> = live
        .iter()
        .map(|m| {
            match m
                .parse::<IpNet>()
                .or_else(|_| m.parse::<std::net::IpAddr>().map(IpNet::from))
            {
                Ok(IpNet::V4(n)) => n,
                other => panic!("{m}: {other:?}"),
            }
        })
        .collect();
    let feed = fixture_bytes("ServiceTags_Public_20251106.json.gz");
    let wanted = v4_addresses(adt_v4(&feed));
    let covered = v4_addresses(
        live_nets
            .iter()
            .copied()
            .filter(|n| n.to_string() != "1.1.1.1/32"),
    );
    assert!(wanted.is_subset(&covered), "every ADT address is admitted");
    assert_eq!((covered.len() - wanted.len()) as u64, extra);
    for n in &live_nets {
        assert!(n.prefix_len() >= 16, "no block broader than /16: {n}");
    }
}

#[test]
fn a_regional_selection_with_unassigned_prefixes() {
    let w = world(
        "Standard",
        "regions = [\"westeurope\"]\ninclude_unassigned = true\n",
    );
    let run = sync_real_feed(&w, &[]);
    run.assert_code(0);
    let report = run.json();
    let eh = w.target(&report, "adt-events");
    // West Europe's 14 IPv4 prefixes and the unassigned IPv4 ones.
    let feed = w.dir.path("ServiceTags_Public_20251106.json");
    let regions = w.dir.run(&[
        "--output",
        "json",
        "feed",
        "regions",
        "--feed-file",
        feed.to_str().expect("utf-8"),
    ]);
    regions.assert_code(0);
    let regions = regions.json();
    let unassigned_v4: Vec<String> = regions["unassigned"]
        .as_array()
        .expect("unassigned")
        .iter()
        .map(|p| p.as_str().expect("prefix").to_owned())
        .filter(|p| !p.contains(':'))
        .collect();
    let bytes = std::fs::read(&feed).expect("feed");
    let we = tag_prefixes(&bytes, "AzureDigitalTwins.WestEurope");
    // The unassigned prefixes computed independently of tagsync: every IPv4
    // prefix of the global tag that no sub-tag's range covers (iprange).
    let raw: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    let mut regional = iprange::IpRange::<Ipv4Net>::new();
    for t in raw["values"].as_array().expect("values") {
        if t["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("AzureDigitalTwins."))
        {
            for p in t["properties"]["addressPrefixes"]
                .as_array()
                .expect("prefixes")
            {
                if let Ok(IpNet::V4(n)) = p.as_str().expect("string").parse::<IpNet>() {
                    regional.add(n.trunc());
                }
            }
        }
    }
    let independent: BTreeSet<String> = adt_v4(&bytes)
        .into_iter()
        .filter(|n| !regional.contains(n))
        .map(|n| n.to_string())
        .collect();
    // FACTS: 29 of the 367 prefixes are in no sub-tag; 19 of them IPv4.
    assert_eq!(independent.len(), 19);
    assert_eq!(
        unassigned_v4.iter().cloned().collect::<BTreeSet<_>>(),
        independent,
        "`feed regions` agrees with the independent computation"
    );
    let expected: BTreeSet<String> = we
        .iter()
        .filter(|p| !p.contains(':'))
        .cloned()
        .chain(independent)
        .collect();
    let desired: BTreeSet<String> = eh["desired"]
        .as_array()
        .expect("desired")
        .iter()
        .map(|p| p.as_str().expect("prefix").to_owned())
        .collect();
    assert_eq!(desired, expected);
    assert_eq!(eh["fit"]["policy"], "lossless");
    assert_eq!(
        eh["plan"]["add"].as_array().expect("add").len(),
        desired.len()
    );
}

#[test]
fn feed_regions_lists_sub_tags_and_the_unassigned_prefixes() {
    let dir = TestDir::new();
    let feed = dir.fixture("ServiceTags_Public_20251106.json.gz");
    let run = dir.run(&[
        "--output",
        "json",
        "feed",
        "regions",
        "--feed-file",
        feed.to_str().expect("utf-8"),
    ]);
    run.assert_code(0);
    let r = run.json();
    assert_eq!(
        r["ipv4"].as_u64().expect("n") + r["ipv6"].as_u64().expect("n"),
        367
    );
    // FACTS.md 2: 29 of the 367 global prefixes are in no sub-tag.
    assert_eq!(r["unassigned"].as_array().expect("list").len(), 29);
    let brazil = r["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .find(|e| e["region"] == "brazilse")
        .expect("brazilse");
    assert_eq!(brazil["location"], "brazilsoutheast");
    // Independently: every unassigned prefix is in the global tag and in no sub-tag.
    let bytes = std::fs::read(&feed).expect("feed");
    let global = tag_prefixes(&bytes, ADT);
    for p in r["unassigned"].as_array().expect("list") {
        assert!(global.contains(p.as_str().expect("prefix")));
    }
}

#[test]
fn a_wrong_max_rules_meets_azures_own_limit_and_changes_nothing() {
    // max_rules = 300 on Event Hubs: tagsync plans 290 rules, Azure refuses.
    let w = world("Standard", "max_rules = 300\n");
    let run = sync_real_feed(&w, &[]);
    run.assert_code(5);
    let report = run.json();
    let eh = w.target(&report, "adt-events");
    assert_eq!(eh["outcome"], "failed");
    let error = eh["error"].as_str().expect("error");
    assert!(
        error.contains("HTTP 400 BadRequest")
            && error.contains("maximum number of allowed IP rules"),
        "{error}"
    );
    assert_eq!(
        masks(&w.arm.rule_set(EH, "adt-eh")["ipRules"], "ipMask"),
        vec!["1.1.1.1"]
    );
    assert!(w.arm.writes().is_empty());
}

/// `plan` on the real feed in human form, with `extra` flags.
fn plan_human(w: &World, extra: &[&str]) -> Run {
    let feed = w.dir.fixture("ServiceTags_Public_20251106.json.gz");
    let env = w.arm.identity_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut args = vec!["--config", w.cfg.as_str()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "plan",
        "--target",
        "adt-events",
        "--feed-file",
        feed.to_str().expect("utf-8"),
    ]);
    w.dir.run_with(&args, &env)
}

#[test]
fn a_refused_plan_shows_its_reason_and_counts_and_lists_rules_only_with_v() {
    let w = world("Standard", "");
    let plain = plan_human(&w, &[]);
    plain.assert_code(6);
    let out = &plain.stdout;
    let refused_at = out.find("refused (budget):").expect("the reason");
    let counts_at = out.find("would have been: +").expect("the counts");
    assert!(refused_at < counts_at, "the reason comes first:\n{out}");
    assert!(
        !out.lines().any(|l| l.starts_with("  + ")),
        "hundreds of + lines without -v:\n{out}"
    );
    assert!(!out.contains('\u{1b}'), "colour in a pipe:\n{out}");
    let verbose = plan_human(&w, &["-v"]);
    verbose.assert_code(6);
    let added = verbose
        .stdout
        .lines()
        .filter(|l| l.starts_with("  + "))
        .count();
    let counted: usize = verbose
        .stdout
        .split("would have been: +")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(counted > 0);
    assert_eq!(added, counted, "{}", verbose.stdout);
}

/// Runs `cmd` under a pseudo-terminal (util-linux `script`), so stdout is a
/// terminal; returns what the terminal showed.
fn on_a_terminal(w: &World, extra_env: &[(&str, &str)]) -> String {
    let feed = w.dir.fixture("ServiceTags_Public_20251106.json.gz");
    let line = format!(
        "{} --config {} plan --target adt-events --feed-file {}",
        env!("CARGO_BIN_EXE_tagsync"),
        w.cfg,
        feed.display()
    );
    let cmd = w.dir.command();
    let mut script = std::process::Command::new("script");
    script
        .args(["-qec", &line, "/dev/null"])
        .current_dir(w.dir.dir.path())
        .env("TERM", "xterm");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    for (k, v) in w.arm.identity_env() {
        script.env(k, v);
    }
    for (k, v) in extra_env {
        script.env(k, v);
    }
    let out = script.output().expect("script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colour_on_a_terminal_and_never_with_no_color() {
    let w = world("Standard", "");
    let coloured = on_a_terminal(&w, &[("NO_COLOR", "")]);
    assert!(
        coloured.contains("\u{1b}[31m  refused (budget)"),
        "{coloured:?}"
    );
    assert!(
        coloured.contains("\u{1b}[1mtarget adt-events"),
        "{coloured:?}"
    );
    // NO_COLOR turns off the colour of the result and of the logs.
    let plain = on_a_terminal(&w, &[("NO_COLOR", "1")]);
    assert!(plain.contains("refused (budget)"), "{plain:?}");
    assert!(plain.contains("INFO"), "{plain:?}");
    assert!(!plain.contains("\u{1b}["), "{plain:?}");
}

#[test]
fn plan_output_markdown_is_a_pull_request_comment() {
    let w = world("Standard", "");
    let feed = w.dir.fixture("ServiceTags_Public_20251106.json.gz");
    let env = w.arm.identity_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = w.dir.run_with(
        &[
            "--config",
            &w.cfg,
            "--output",
            "markdown",
            "plan",
            "--feed-file",
            feed.to_str().expect("utf-8"),
        ],
        &env,
    );
    run.assert_code(6);
    let md = &run.stdout;
    assert!(md.starts_with("## tagsync plan\n"), "{md}");
    assert!(
        md.contains("**3 targets: 1 to change (+304 -0 rules), 0 unchanged, 2 refused, 0 failed**"),
        "{md}"
    );
    assert!(
        md.contains("| target | kind | outcome | rules | + | - |"),
        "{md}"
    );
    // A refused target: its reason first, its rules folded away.
    let events = md
        .split("### `adt-events` (event-hubs): refused")
        .nth(1)
        .expect("the refused target's section");
    let reason = events.find("> **Refused (budget):**").expect("reason");
    let rules = events
        .find("<details><summary>would have added 289 rules</summary>")
        .expect("folded rules");
    assert!(reason < rules, "{md}");
    // The Storage account (400 rules) takes them all: each one listed.
    let account = md
        .split("### `adt-deadletter` (storage): planned")
        .nth(1)
        .expect("the account's section");
    assert!(
        account.contains("<details><summary>to add 304 rules</summary>"),
        "{md}"
    );
    assert_eq!(
        account.lines().filter(|l| l.starts_with("- `")).count(),
        304,
        "{md}"
    );
    assert_eq!(
        md.matches("<details>").count(),
        md.matches("</details>").count(),
        "{md}"
    );
    // Nothing was written.
    assert!(w.arm.state.lock().expect("lock").writes.is_empty());
    // Markdown is for plans only.
    let history = w.dir.run(&["--output", "markdown", "history"]);
    history.assert_code(2);
    assert!(
        history.stderr.contains("use it with `plan`"),
        "{}",
        history.stderr
    );
}
