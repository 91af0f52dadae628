//! Replays real feeds into one history and checks what was recorded against
//! an independent computation (full serde_json parse, plain set difference).

use std::collections::{BTreeSet, HashSet};

use crate::util::*;

fn strings(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

#[test]
fn weekly_captures_replay_into_the_history_exactly() {
    let dir = TestDir::new();
    let files = weekly_fixtures();
    assert_eq!(files.len(), 181, "the 181 weekly captures");
    let mut previous: Option<BTreeSet<String>> = None;
    let mut changed_weeks = Vec::new();
    let mut distinct_sets = HashSet::new();
    for (week, name) in files.iter().enumerate() {
        let bytes = fixture_bytes(name);
        let path = dir.write("feed.json", &bytes);
        let run = dir.run(&[
            "--output",
            "json",
            "sync",
            "--feed-file",
            path.to_str().expect("utf-8"),
        ]);
        run.assert_code(0);
        let report = run.json();
        let tag = &report["tags"][0];
        assert_eq!(tag["name"], ADT);
        let current = tag_prefixes(&bytes, ADT);
        distinct_sets.insert(current.clone());
        if let Some(prev) = &previous {
            let added: BTreeSet<String> = current.difference(prev).cloned().collect();
            let removed: BTreeSet<String> = prev.difference(&current).cloned().collect();
            assert_eq!(strings(&tag["added"]), added, "{name}: added");
            assert_eq!(strings(&tag["removed"]), removed, "{name}: removed");
            let changed = !added.is_empty() || !removed.is_empty();
            assert_eq!(tag["changed"], changed, "{name}");
            assert_eq!(
                report["outcome"],
                if changed { "changed" } else { "unchanged" },
                "{name}"
            );
            if changed {
                changed_weeks.push((week, added, removed));
            }
        } else {
            assert_eq!(tag["first"], true);
        }
        assert_eq!(
            tag["ipv4"].as_u64().expect("count") + tag["ipv6"].as_u64().expect("count"),
            current.len() as u64
        );
        previous = Some(current);
    }
    // The tag really changed over these three and a half years.
    assert!(
        changed_weeks.len() >= 10,
        "only {} changes",
        changed_weeks.len()
    );

    // The history tells the same story as the sync reports did.
    let history = dir
        .run(&["--output", "json", "history", "--limit", "1000"])
        .json();
    let runs = history.as_array().expect("runs");
    assert_eq!(runs.len(), 181);
    let recorded_changes: Vec<&serde_json::Value> = runs
        .iter()
        .rev()
        .skip(1)
        .filter(|r| r["outcome"] == "changed")
        .collect();
    assert_eq!(recorded_changes.len(), changed_weeks.len());
    for (run, (week, added, removed)) in recorded_changes.iter().zip(&changed_weeks) {
        assert_eq!(run["run_id"], (*week as u64) + 1);
        assert_eq!(strings(&run["tags"][0]["added"]), *added);
        assert_eq!(strings(&run["tags"][0]["removed"]), *removed);
    }

    // Each distinct prefix set is stored once, not once a week.
    let state = db_state(&dir.db());
    assert_eq!(state.prefix_sets.len(), distinct_sets.len());
    assert_eq!(state.snapshots.len(), 181);

    // `diff` between the first and last run equals the set difference.
    let first = tag_prefixes(&fixture_bytes(&files[0]), ADT);
    let last = tag_prefixes(&fixture_bytes(&files[180]), ADT);
    let diff = dir
        .run(&["--output", "json", "diff", "1", "latest", "--tag", ADT])
        .json();
    assert_eq!(
        strings(&diff["tags"][0]["added"]),
        last.difference(&first).cloned().collect()
    );
    assert_eq!(
        strings(&diff["tags"][0]["removed"]),
        first.difference(&last).cloned().collect()
    );
}

#[test]
fn whole_real_feeds_record_the_global_tag() {
    let dir = TestDir::new();
    let old = dir.fixture("ServiceTags_Public_20210106.json.gz");
    let new = dir.fixture("ServiceTags_Public_20251106.json.gz");
    let first = dir.run(&[
        "--output",
        "json",
        "sync",
        "--feed-file",
        old.to_str().expect("utf-8"),
    ]);
    first.assert_code(0);
    let first = first.json();
    assert_eq!(first["feed"]["change_number"], 128);
    assert_eq!(first["feed"]["tag_count"], 1767);
    assert_eq!(first["feed"]["bytes"], 1_996_302);
    assert_eq!(first["tags"][0]["ipv4"], 216);
    assert_eq!(first["tags"][0]["ipv6"], 3);

    let second = dir.run(&[
        "--output",
        "json",
        "sync",
        "--feed-file",
        new.to_str().expect("utf-8"),
    ]);
    second.assert_code(0);
    let second = second.json();
    assert_eq!(second["feed"]["change_number"], 375);
    assert_eq!(second["feed"]["tag_count"], 3039);
    assert_eq!(second["tags"][0]["ipv4"], 289);
    assert_eq!(second["tags"][0]["ipv6"], 78);
    let a = tag_prefixes(&std::fs::read(&old).expect("read"), ADT);
    let b = tag_prefixes(&std::fs::read(&new).expect("read"), ADT);
    assert_eq!(
        strings(&second["tags"][0]["added"]),
        b.difference(&a).cloned().collect()
    );
    assert_eq!(
        strings(&second["tags"][0]["removed"]),
        a.difference(&b).cloned().collect()
    );
    // The sha256 is of the file as published.
    let sha = second["feed"]["sha256"].as_str().expect("sha");
    assert_eq!(sha.len(), 64);

    // Same file again: unchanged, byte-identical tag report.
    let third = dir.run(&[
        "--output",
        "json",
        "sync",
        "--feed-file",
        new.to_str().expect("utf-8"),
    ]);
    third.assert_code(0);
    let third = third.json();
    assert_eq!(third["outcome"], "unchanged");
    assert_eq!(third["tags"][0]["added"], serde_json::json!([]));

    // Regional selection from the same file.
    let regional = dir.run_with(
        &[
            "--output",
            "json",
            "feed",
            "show",
            "--feed-file",
            new.to_str().expect("utf-8"),
        ],
        &[("TAGSYNC_TAGS_REGIONS", "westeurope,francecentral")],
    );
    regional.assert_code(0);
    let names: Vec<String> = regional.json()["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "AzureDigitalTwins.FranceCentral",
            "AzureDigitalTwins.WestEurope"
        ]
    );
}
