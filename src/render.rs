//! What commands print: one serializable report per command (the stable
//! `--output json` form, documented in the README) and its human rendering.
//! Everything is sorted, so the same input prints the same bytes.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::config::Settings;
use crate::feed::source::SourceSpec;
use crate::feed::{ScannedFeed, ServiceTag};
use crate::feed_stage::{FeedInfo, FeedRun};
use crate::history::{RunEntry, TagChange};
use crate::plan::FitPolicy;
use crate::prefix::PrefixSet;
use crate::reconcile::TargetReport;

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub run_id: i64,
    /// `changed` or `unchanged`.
    pub outcome: &'static str,
    pub feed: FeedInfo,
    pub tags: Vec<TagReport>,
    pub warnings: Vec<String>,
    pub pruned_runs: u64,
    /// One report per target (empty when no targets are configured).
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Serialize)]
pub struct TagReport {
    pub name: String,
    pub region: String,
    pub change_number: u64,
    pub previous_change_number: Option<u64>,
    pub previous_run_id: Option<i64>,
    pub ipv4: usize,
    pub ipv6: usize,
    /// No earlier snapshot of this tag.
    pub first: bool,
    pub changed: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl TagReport {
    fn new(c: &TagChange) -> Self {
        Self {
            name: c.state.name.clone(),
            region: c.state.region.clone(),
            change_number: c.state.change_number,
            previous_change_number: c.previous_change_number,
            previous_run_id: c.previous_run_id,
            ipv4: c.state.prefixes.v4().len(),
            ipv6: c.state.prefixes.v6().len(),
            first: c.first,
            changed: c.changed(),
            added: c.added.to_strings(),
            removed: c.removed.to_strings(),
        }
    }
}

impl SyncReport {
    pub fn new(run: &FeedRun) -> Self {
        Self {
            run_id: run.recorded.run_id,
            outcome: if run.recorded.changed {
                "changed"
            } else {
                "unchanged"
            },
            feed: run.feed.clone(),
            tags: run.recorded.tags.iter().map(TagReport::new).collect(),
            warnings: run.warnings.clone(),
            pruned_runs: run.pruned_runs,
            targets: Vec::new(),
        }
    }
}

pub fn sync_human(r: &SyncReport, verbose: bool) -> String {
    let mut out = String::new();
    let f = &r.feed;
    let cn = f.change_number.map_or("?".into(), |n| n.to_string());
    let _ = writeln!(
        out,
        "run {}: {} (feed {} changeNumber {}{})",
        r.run_id,
        r.outcome,
        f.cloud,
        cn,
        if f.not_modified {
            ", not modified since the last download".to_owned()
        } else {
            f.bytes
                .map(|b| format!(", {b} bytes, {} tags", f.tag_count.unwrap_or(0)))
                .unwrap_or_default()
        }
    );
    let _ = writeln!(out, "source: {} ({})", f.location, f.found_by);
    let width = r
        .tags
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let _ = writeln!(
        out,
        "{:<width$}  {:>6}  {:>4}  {:>4}  SINCE LAST",
        "TAG", "CHANGE", "IPV4", "IPV6"
    );
    for t in &r.tags {
        let since = if t.first {
            "first snapshot".to_owned()
        } else if t.changed {
            format!(
                "+{} -{} (changeNumber {} in run {})",
                t.added.len(),
                t.removed.len(),
                t.previous_change_number.unwrap_or(0),
                t.previous_run_id.unwrap_or(0)
            )
        } else {
            "unchanged".to_owned()
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>6}  {:>4}  {:>4}  {since}",
            t.name, t.change_number, t.ipv4, t.ipv6
        );
        if !t.first {
            for p in &t.added {
                let _ = writeln!(out, "  + {p}");
            }
            for p in &t.removed {
                let _ = writeln!(out, "  - {p}");
            }
        }
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if r.pruned_runs > 0 {
        let _ = writeln!(
            out,
            "pruned {} old runs ([database] retention)",
            r.pruned_runs
        );
    }
    if !r.targets.is_empty() {
        out.push('\n');
        out.push_str(&targets_human(&r.targets, verbose));
    }
    out
}

/// Each target's plan or result, readable. A refused target shows its
/// reason and counts; `verbose` lists its rules too.
pub fn targets_human(reports: &[TargetReport], verbose: bool) -> String {
    let mut out = String::new();
    for r in reports {
        if r.outcome == crate::reconcile::Outcome::Refused {
            // The reason first, and counts instead of every rule.
            let _ = writeln!(out, "target {} ({}): refused", r.name, r.kind);
            let _ = writeln!(out, "  {}", r.resource_id);
            if let (Some(g), Some(e)) = (&r.guard, &r.error) {
                let _ = writeln!(out, "  refused ({}): {e}", g.as_str());
            }
            if let Some(p) = &r.plan {
                let _ = writeln!(
                    out,
                    "  would have been: +{} -{} rules ({} -> {} of {}); nothing was written",
                    p.add.len(),
                    p.remove.len(),
                    p.capacity.used_before,
                    p.capacity.used_after,
                    p.capacity.budget
                );
                if verbose {
                    list_rules(&mut out, p);
                }
            }
            for w in &r.warnings {
                let _ = writeln!(out, "  warning: {w}");
            }
            continue;
        }
        let _ = writeln!(
            out,
            "target {} ({}): {}",
            r.name,
            r.kind,
            r.outcome.as_str()
        );
        let _ = writeln!(out, "  {}", r.resource_id);
        if !r.tags.is_empty() {
            let _ = writeln!(out, "  tags: {}", r.tags.join(", "));
        }
        if let Some(p) = &r.plan {
            let _ = writeln!(
                out,
                "  rules {} -> {} of {}; +{} -{}; {} owned kept, {} foreign kept, {} awaiting removal",
                p.capacity.used_before,
                p.capacity.used_after,
                p.capacity.budget,
                p.add.len(),
                p.remove.len(),
                p.keep.len(),
                p.foreign.len(),
                p.pending_removal.len()
            );
            list_rules(&mut out, p);
        }
        if let Some(f) = r.fit.as_ref().filter(|f| f.policy != FitPolicy::Lossless) {
            let _ = writeln!(
                out,
                "  fit ({}): {} rules needed, {} room, {} after; {} addresses outside the tags admitted",
                f.policy.as_str(),
                f.rules_needed,
                f.room,
                f.rules_after,
                f.extra_addresses
            );
            for b in &f.over_admitting {
                let _ = writeln!(
                    out,
                    "  ~ {} admits {} extra addresses",
                    b.block, b.extra_addresses
                );
            }
        }
        if let (Some(g), Some(e)) = (&r.guard, &r.error) {
            let _ = writeln!(out, "  refused ({}): {e}", g.as_str());
        } else if let Some(e) = &r.error {
            let _ = writeln!(out, "  error: {e}");
        }
        for n in r.drift.iter() {
            let _ = writeln!(out, "  drift: {n}");
        }
        for w in &r.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
    }
    if !reports.is_empty() {
        out.push_str(&targets_summary(reports));
    }
    out
}

fn list_rules(out: &mut String, p: &crate::plan::TargetPlan) {
    for n in p.add.iter() {
        let _ = writeln!(out, "  + {n}");
    }
    for n in p.remove.iter() {
        let _ = writeln!(out, "  - {n}");
    }
}

/// One closing line, like `terraform plan`'s: how many targets change, by
/// how many rules, and how many were refused or failed.
pub fn targets_summary(reports: &[TargetReport]) -> String {
    use crate::reconcile::Outcome;
    let count = |o: Outcome| reports.iter().filter(|r| r.outcome == o).count();
    let changing: Vec<&TargetReport> = reports
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                Outcome::Planned | Outcome::Applied | Outcome::Drifted
            ) && r.plan.as_ref().is_some_and(|p| p.has_changes())
        })
        .collect();
    let added: usize = changing
        .iter()
        .filter_map(|r| r.plan.as_ref())
        .map(|p| p.add.len())
        .sum();
    let removed: usize = changing
        .iter()
        .filter_map(|r| r.plan.as_ref())
        .map(|p| p.remove.len())
        .sum();
    let verb = if reports.iter().any(|r| r.outcome == Outcome::Planned) {
        "to change"
    } else {
        "changed"
    };
    let unchanged = reports
        .iter()
        .filter(|r| match r.outcome {
            Outcome::Unchanged => true,
            Outcome::Planned | Outcome::Applied => {
                !r.plan.as_ref().is_some_and(|p| p.has_changes())
            }
            _ => false,
        })
        .count();
    let drifted = match count(Outcome::Drifted) {
        0 => String::new(),
        n => format!(", {n} drifted"),
    };
    format!(
        "{} targets: {} {verb} (+{added} -{removed} rules), {unchanged} unchanged, {} refused, {} failed{drifted}\n",
        reports.len(),
        changing.len(),
        count(Outcome::Refused),
        count(Outcome::Failed),
    )
}

/// `tagsync targets check`, per target.
#[derive(Debug, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub kind: String,
    pub resource_id: String,
    pub sku: Option<String>,
    pub location: Option<String>,
    /// Why the resource cannot hold IP rules, if it cannot.
    pub unsupported: Option<String>,
    pub default_action: Option<String>,
    pub ip_rules: usize,
    pub owned: usize,
    pub foreign: usize,
    pub vnet_rules: usize,
    pub budget: usize,
    pub used: usize,
    pub left: usize,
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

impl TargetCheck {
    /// The check of a target from what the pipeline read (`targets check`).
    pub fn new(t: &crate::targets::TargetSpec, run: &crate::reconcile::TargetRun) -> Self {
        let caps = t.adapter.capabilities(t);
        let r = &run.report;
        let mut check = Self {
            name: t.name.clone(),
            kind: t.adapter.name().to_owned(),
            resource_id: t.resource.id.clone(),
            sku: r.sku.clone(),
            location: r.location.clone(),
            unsupported: None,
            default_action: None,
            ip_rules: 0,
            owned: 0,
            foreign: 0,
            vnet_rules: 0,
            budget: caps.budget,
            used: 0,
            left: 0,
            warnings: r.warnings.clone(),
            error: r.error.clone(),
        };
        let Some(live) = &run.live else {
            return check;
        };
        if let Some(why) = &live.facts.unsupported {
            check.unsupported = Some(why.clone());
            check.error = None;
            return check;
        }
        let owned = run.owned.as_ref().map_or(0, PrefixSet::len);
        check.ip_rules = live.rules.ip.len() + live.rules.other_ip_rules;
        check.owned = owned;
        check.foreign = check.ip_rules - owned;
        check.vnet_rules = live.rules.vnet_rules;
        check.used = check.ip_rules
            + if caps.vnet_rules_share_budget {
                live.rules.vnet_rules
            } else {
                0
            };
        check.left = caps.budget.saturating_sub(check.used);
        check.default_action = live.default_action.clone();
        check
    }
}

pub fn checks_human(checks: &[TargetCheck]) -> String {
    let mut out = String::new();
    for c in checks {
        let status = if c.error.is_some() {
            "FAILED"
        } else if c.unsupported.is_some() {
            "UNSUPPORTED"
        } else {
            "ok"
        };
        let _ = writeln!(out, "target {} ({}): {status}", c.name, c.kind);
        let _ = writeln!(out, "  {}", c.resource_id);
        if let Some(e) = &c.error {
            let _ = writeln!(out, "  error: {e}");
            continue;
        }
        let _ = writeln!(
            out,
            "  sku {}, location {}, defaultAction {}",
            c.sku.as_deref().unwrap_or("?"),
            c.location.as_deref().unwrap_or("?"),
            c.default_action.as_deref().unwrap_or("?")
        );
        if let Some(u) = &c.unsupported {
            let _ = writeln!(out, "  unsupported: {u}");
        }
        let _ = writeln!(
            out,
            "  {} IP rules ({} owned, {} foreign), {} virtual network rules; {} of {} used, {} left",
            c.ip_rules, c.owned, c.foreign, c.vnet_rules, c.used, c.budget, c.left
        );
        for w in &c.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
    }
    out
}

#[derive(Debug, Serialize)]
pub struct FeedShow {
    pub cloud: String,
    pub change_number: u64,
    pub tag_count: usize,
    pub tags: Vec<ShownTag>,
}

#[derive(Debug, Serialize)]
pub struct ShownTag {
    pub name: String,
    pub region: String,
    pub system_service: String,
    pub change_number: u64,
    pub ipv4_count: usize,
    pub ipv6_count: usize,
    /// Distinct IPv4 addresses covered.
    pub ipv4_addresses: u64,
    /// Prefixes after lossless aggregation.
    pub aggregated_count: usize,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
    pub warnings: Vec<String>,
}

impl FeedShow {
    pub fn new(feed: &ScannedFeed, tags: &[ServiceTag]) -> Self {
        Self {
            cloud: feed.cloud.clone(),
            change_number: feed.change_number,
            tag_count: feed.tag_names.len(),
            tags: tags
                .iter()
                .map(|t| ShownTag {
                    name: t.name.clone(),
                    region: t.region.clone(),
                    system_service: t.system_service.clone(),
                    change_number: t.change_number,
                    ipv4_count: t.prefixes.v4().len(),
                    ipv6_count: t.prefixes.v6().len(),
                    ipv4_addresses: t.prefixes.ipv4_addresses(),
                    aggregated_count: t.prefixes.aggregate().len(),
                    ipv4: t.prefixes.v4().iter().map(ToString::to_string).collect(),
                    ipv6: t.prefixes.v6().iter().map(ToString::to_string).collect(),
                    warnings: t
                        .normalized
                        .iter()
                        .map(|n| format!("`{}` has host bits set; using {}", n.input, n.network))
                        .collect(),
                })
                .collect(),
        }
    }
}

pub fn feed_show_human(r: &FeedShow) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = writeln!(
        out,
        "feed: cloud {}, changeNumber {}, {} tags",
        r.cloud, r.change_number, r.tag_count
    );
    for t in &r.tags {
        let region = if t.region.is_empty() {
            "global".to_owned()
        } else {
            t.region.clone()
        };
        let _ = writeln!(
            out,
            "\n{} (changeNumber {}, {}): {} IPv4 ({} addresses) + {} IPv6 prefixes, {} after aggregation",
            t.name,
            t.change_number,
            region,
            t.ipv4_count,
            t.ipv4_addresses,
            t.ipv6_count,
            t.aggregated_count
        );
        for p in t.ipv4.iter().chain(&t.ipv6) {
            out.push_str(p);
            out.push('\n');
        }
        for w in &t.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
    }
    out
}

/// `tagsync feed regions`.
#[derive(Debug, Serialize)]
pub struct Regions {
    pub tag: String,
    pub change_number: u64,
    pub ipv4: usize,
    pub ipv6: usize,
    pub regions: Vec<RegionEntry>,
    /// Prefixes of the global tag that no sub-tag covers.
    pub unassigned: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RegionEntry {
    pub name: String,
    /// The ARM location (from the sub-tag's name).
    pub location: String,
    /// The feed's own `region` field (not always the ARM name).
    pub region: String,
    pub change_number: u64,
    pub ipv4: usize,
    pub ipv6: usize,
}

impl Regions {
    pub fn new(feed: &ScannedFeed, global: &ServiceTag, subtags: &[ServiceTag]) -> Self {
        let mut regions: Vec<RegionEntry> = subtags
            .iter()
            .map(|t| RegionEntry {
                name: t.name.clone(),
                location: crate::tags::subtag_location(&global.name, &t.name),
                region: t.region.clone(),
                change_number: t.change_number,
                ipv4: t.prefixes.v4().len(),
                ipv6: t.prefixes.v6().len(),
            })
            .collect();
        regions.sort_by(|a, b| a.location.cmp(&b.location));
        let subs: Vec<&PrefixSet> = subtags.iter().map(|t| &t.prefixes).collect();
        Self {
            tag: global.name.clone(),
            change_number: feed.change_number,
            ipv4: global.prefixes.v4().len(),
            ipv6: global.prefixes.v6().len(),
            regions,
            unassigned: crate::tags::unassigned(&global.prefixes, &subs).to_strings(),
        }
    }
}

pub fn regions_human(r: &Regions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} IPv4 + {} IPv6 prefixes, {} regional sub-tags (feed changeNumber {})",
        r.tag,
        r.ipv4,
        r.ipv6,
        r.regions.len(),
        r.change_number
    );
    let _ = writeln!(
        out,
        "{:<22} {:<18} {:>4} {:>4}  SUB-TAG",
        "LOCATION", "FEED REGION", "IPV4", "IPV6"
    );
    for e in &r.regions {
        let _ = writeln!(
            out,
            "{:<22} {:<18} {:>4} {:>4}  {}",
            e.location, e.region, e.ipv4, e.ipv6, e.name
        );
    }
    let _ = writeln!(
        out,
        "\n{} of the {} prefixes of {} are in no sub-tag (include_unassigned = true adds them to a regional selection):",
        r.unassigned.len(),
        r.ipv4 + r.ipv6,
        r.tag
    );
    for p in &r.unassigned {
        let _ = writeln!(out, "{p}");
    }
    out
}

pub fn applies_human(target: &str, applies: &[crate::ledger::ApplyEntry]) -> String {
    let mut out = String::new();
    if applies.is_empty() {
        let _ = writeln!(out, "no applies recorded for target {target}");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>5}  {:<20}  {:<9}  {:>5}  {:>13}  CHANGES",
        "APPLY", "STARTED", "OUTCOME", "RUN", "RULES"
    );
    for a in applies {
        let _ = writeln!(
            out,
            "{:>5}  {:<20}  {:<9}  {:>5}  {:>13}  +{} -{}{}",
            a.apply_id,
            a.started_at,
            a.outcome,
            a.run_id.map_or("-".into(), |r| r.to_string()),
            format!("{} -> {}", a.rules_before, a.rules_after),
            a.added.len(),
            a.removed.len(),
            if a.repeats > 1 {
                format!(
                    "  ({} runs in a row, the last at {})",
                    a.repeats, a.finished_at
                )
            } else {
                String::new()
            }
        );
        for p in &a.added {
            let _ = writeln!(out, "             + {p}");
        }
        for p in &a.removed {
            let _ = writeln!(out, "             - {p}");
        }
        for p in &a.drift {
            let _ = writeln!(out, "             drift {p}");
        }
        if let Some(e) = &a.error {
            let _ = writeln!(
                out,
                "             {}: {e}",
                a.guard.as_deref().unwrap_or("error")
            );
        }
    }
    out
}

pub fn history_human(runs: &[RunEntry]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        out.push_str("no runs recorded\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>5}  {:<20}  {:<15}  {:>12}  SOURCE",
        "RUN", "STARTED", "OUTCOME", "CHANGENUMBER"
    );
    for r in runs {
        let cn = r.change_number.map_or("-".into(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{:>5}  {:<20}  {:<15}  {:>12}  {}{}",
            r.run_id,
            r.started_at,
            r.outcome,
            cn,
            r.source,
            if r.not_modified {
                " (304 not modified)"
            } else {
                ""
            }
        );
        if let Some(e) = &r.error {
            let first = e.lines().next().unwrap_or_default();
            let _ = writeln!(
                out,
                "       {}: {first}",
                r.error_kind.as_deref().unwrap_or("error")
            );
        }
        for s in &r.tags {
            let what = if s.changed && s.added.is_empty() && s.removed.is_empty() {
                "first snapshot".to_owned()
            } else if s.changed {
                format!("+{} -{}", s.added.len(), s.removed.len())
            } else {
                "unchanged".to_owned()
            };
            let _ = writeln!(
                out,
                "       {} changeNumber {}: {} IPv4 + {} IPv6, {what}",
                s.tag, s.change_number, s.ipv4, s.ipv6
            );
        }
    }
    out
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub from: i64,
    pub to: i64,
    pub tags: Vec<TagDiff>,
}

#[derive(Debug, Serialize)]
pub struct TagDiff {
    pub tag: String,
    /// changeNumber in the FROM run (absent: the run did not record the tag).
    pub from_change_number: Option<u64>,
    pub to_change_number: Option<u64>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl TagDiff {
    pub fn new(
        tag: &str,
        before: Option<(u64, PrefixSet)>,
        after: Option<(u64, PrefixSet)>,
    ) -> Self {
        let empty = PrefixSet::new();
        let b = before.as_ref().map_or(&empty, |(_, p)| p);
        let a = after.as_ref().map_or(&empty, |(_, p)| p);
        Self {
            tag: tag.to_owned(),
            from_change_number: before.as_ref().map(|(c, _)| *c),
            to_change_number: after.as_ref().map(|(c, _)| *c),
            added: a.difference(b).to_strings(),
            removed: b.difference(a).to_strings(),
        }
    }
}

pub fn diff_human(d: &Diff) -> String {
    let mut out = String::new();
    for t in &d.tags {
        let cn = |c: Option<u64>| c.map_or("absent".into(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{}: run {} (changeNumber {}) -> run {} (changeNumber {}): +{} -{}",
            t.tag,
            d.from,
            cn(t.from_change_number),
            d.to,
            cn(t.to_change_number),
            t.added.len(),
            t.removed.len()
        );
        for p in &t.added {
            let _ = writeln!(out, "  + {p}");
        }
        for p in &t.removed {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}

#[derive(Debug, Serialize)]
pub struct ConfigReport {
    pub config_file: Option<String>,
    pub valid: bool,
    pub source: String,
    pub location: String,
    pub cloud: String,
    pub tags: Vec<String>,
    pub regions: Vec<String>,
    pub database: String,
    pub retention: Option<String>,
    pub max_bytes: u64,
    pub timeout: String,
    pub retries: u32,
    pub auth: String,
    /// What `auto` resolves to here, and why (the configured method otherwise).
    pub auth_resolved: String,
    /// What this environment lacks for the chosen credential (the pod may
    /// still provide it).
    pub warnings: Vec<String>,
    pub resource_manager: String,
    pub targets: Vec<ConfiguredTarget>,
    pub notify: Vec<ConfiguredReceiver>,
}

/// A `[[notify]]` receiver as `config check` shows it: its URL only as
/// scheme and host.
#[derive(Debug, Serialize)]
pub struct ConfiguredReceiver {
    pub name: String,
    pub url: String,
    pub events: Vec<&'static str>,
    pub signed: bool,
    pub auth: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ConfiguredTarget {
    pub name: String,
    pub kind: String,
    pub resource_id: String,
    pub tags: Vec<String>,
    pub regions: Vec<String>,
    pub overflow: crate::fit::Overflow,
}

impl ConfigReport {
    pub fn new(file: Option<&Path>, s: &Settings) -> Self {
        let location = match &s.source {
            SourceSpec::DownloadCenter { landing_base, .. } => crate::http::redact(landing_base),
            SourceSpec::Url(u) => crate::http::redact(u),
            SourceSpec::File(p) => p.display().to_string(),
            SourceSpec::DiscoveryApi {
                subscription,
                location,
            } => format!("subscription {subscription}, location {location}"),
        };
        Self {
            config_file: file.map(|p| p.display().to_string()),
            valid: true,
            source: s.source.name().to_owned(),
            location,
            cloud: s.cloud.as_str().to_owned(),
            tags: s.selection.tags.clone(),
            regions: s.selection.regions.clone(),
            database: s.db_path.display().to_string(),
            retention: s
                .retention
                .map(|d| humantime::format_duration(d).to_string()),
            max_bytes: s.http.max_bytes,
            timeout: humantime::format_duration(s.http.timeout).to_string(),
            retries: s.http.retries,
            auth: s.azure.auth.method.as_str().to_owned(),
            warnings: credential_warnings(s)
                .into_iter()
                .chain(receiver_warnings(s))
                .collect(),
            auth_resolved: {
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let (m, why) = crate::azure::auth::choose(
                    s.azure.auth.method,
                    &env,
                    &crate::azure::auth::on_path,
                    &s.azure.auth,
                );
                format!("{}: {why}", m.as_str())
            },
            resource_manager: crate::http::redact(&s.azure.arm.resource_manager),
            targets: s
                .targets
                .iter()
                .map(|t| ConfiguredTarget {
                    name: t.name.clone(),
                    kind: t.adapter.name().to_owned(),
                    resource_id: t.resource.id.clone(),
                    tags: t.selection.tags.clone(),
                    regions: t.selection.regions.clone(),
                    overflow: t.overflow,
                })
                .collect(),
            notify: s
                .notify
                .receivers
                .iter()
                .map(|r| ConfiguredReceiver {
                    name: r.name.clone(),
                    url: r.shown_url(),
                    events: r.events.iter().map(|e| e.as_str()).collect(),
                    signed: r.secret_file.is_some(),
                    auth: match r.auth {
                        crate::notify::ReceiverAuth::None => "none",
                        crate::notify::ReceiverAuth::EntraEventGrid => "entra",
                    },
                })
                .collect(),
        }
    }
}

/// Receiver files this environment cannot read (the pod may still mount
/// them): their events would wait.
fn receiver_warnings(s: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for r in &s.notify.receivers {
        let url_file = match &r.url {
            crate::notify::ReceiverUrl::File(p) => Some(("url_file", p)),
            crate::notify::ReceiverUrl::Inline(_) => None,
        };
        let secret = r.secret_file.as_ref().map(|p| ("secret_file", p));
        for (key, path) in url_file.into_iter().chain(secret) {
            if let Err(e) = std::fs::metadata(path) {
                out.push(format!(
                    "[[notify]] `{}`: {key} {} cannot be read here ({e}); its events would wait until it can",
                    r.name,
                    path.display()
                ));
            }
        }
    }
    out
}

/// What the chosen credential needs and this environment does not have.
fn credential_warnings(s: &Settings) -> Vec<String> {
    let auth = &s.azure.auth;
    if auth.method != crate::azure::auth::AuthMethod::ClientSecret {
        return Vec::new();
    }
    let env = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty());
    let mut missing = Vec::new();
    if auth.tenant_id.is_none() && !env("AZURE_TENANT_ID") {
        missing.push("a tenant ([azure] tenant_id or AZURE_TENANT_ID)");
    }
    if auth.client_id.is_none() && !env("AZURE_CLIENT_ID") {
        missing.push("a client id ([azure] client_id or AZURE_CLIENT_ID)");
    }
    if auth.client_secret_file.is_none() && !env("AZURE_CLIENT_SECRET") {
        missing.push("a secret ([azure] client_secret_file or AZURE_CLIENT_SECRET)");
    }
    if missing.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "auth = \"client-secret\" needs {}, and this environment has none",
        missing.join(", ")
    )]
}

pub fn config_human(r: &ConfigReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "configuration is valid ({})",
        r.config_file
            .as_deref()
            .unwrap_or("no file: built-in defaults")
    );
    let _ = writeln!(
        out,
        "feed:      {} {} (cloud {})",
        r.source, r.location, r.cloud
    );
    let _ = writeln!(out, "tags:      {}", r.tags.join(", "));
    if !r.regions.is_empty() {
        let _ = writeln!(out, "regions:   {}", r.regions.join(", "));
    }
    let _ = writeln!(
        out,
        "database:  {} (retention {})",
        r.database,
        r.retention.as_deref().unwrap_or("keep everything")
    );
    let _ = writeln!(
        out,
        "http:      timeout {}, {} retries, cap {} bytes",
        r.timeout, r.retries, r.max_bytes
    );
    let _ = writeln!(
        out,
        "azure:     auth {} ({}), {}",
        r.auth, r.auth_resolved, r.resource_manager
    );
    for t in &r.targets {
        let regions = if t.regions.is_empty() {
            String::new()
        } else {
            format!(" in {}", t.regions.join(", "))
        };
        let _ = writeln!(
            out,
            "target:    {} ({}): {}{regions}",
            t.name,
            t.kind,
            t.tags.join(", ")
        );
        let _ = writeln!(out, "           {}", t.resource_id);
    }
    for n in &r.notify {
        let _ = writeln!(
            out,
            "notify:    {} {}{}{}: {}",
            n.name,
            n.url,
            if n.signed { ", signed" } else { "" },
            if n.auth == "entra" {
                ", Entra ID token"
            } else {
                ""
            },
            n.events.join(", ")
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning:   {w}");
    }
    out
}

/// A plan (or a run's result) as Markdown for a pull-request comment, like
/// octoDNS's Markdown plan: a summary line, then per target a heading with
/// its outcome, a refusal's or failure's reason first, and the rules added
/// and removed in collapsible sections. Prefixes are code spans, so nothing
/// in them is read as Markdown.
pub fn targets_markdown(reports: &[TargetReport], command: &str) -> String {
    use crate::reconcile::Outcome;
    let mut out = String::new();
    let _ = writeln!(out, "## tagsync {command}\n");
    if reports.is_empty() {
        out.push_str("No targets are configured: only the feed was recorded.\n");
        return out;
    }
    let _ = writeln!(out, "**{}**\n", targets_summary(reports).trim_end());
    let _ = writeln!(out, "| target | kind | outcome | rules | + | - |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for r in reports {
        let (rules, add, remove) = match &r.plan {
            Some(p) => (
                format!(
                    "{} -> {} of {}",
                    p.capacity.used_before, p.capacity.used_after, p.capacity.budget
                ),
                p.add.len().to_string(),
                p.remove.len().to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {rules} | {add} | {remove} |",
            r.name,
            r.kind,
            r.outcome.as_str()
        );
    }
    for r in reports {
        let _ = writeln!(
            out,
            "\n### `{}` ({}): {}\n",
            r.name,
            r.kind,
            r.outcome.as_str()
        );
        let _ = writeln!(out, "`{}`\n", r.resource_id);
        match (&r.guard, &r.error) {
            (Some(g), Some(e)) => {
                let _ = writeln!(out, "> **Refused ({}):** {}\n", g.as_str(), one_line(e));
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "> **Failed:** {}\n", one_line(e));
            }
            _ => {}
        }
        if let Some(p) = &r.plan {
            let (adding, removing) = match r.outcome {
                Outcome::Applied | Outcome::Drifted => ("added", "removed"),
                Outcome::Refused | Outcome::Failed => ("would have added", "would have removed"),
                _ => ("to add", "to remove"),
            };
            for (title, set) in [(adding, &p.add), (removing, &p.remove)] {
                if set.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "<details><summary>{} {} rules</summary>\n",
                    title,
                    set.len()
                );
                for n in set.iter() {
                    let _ = writeln!(out, "- `{n}`");
                }
                out.push_str("\n</details>\n\n");
            }
            if !p.pending_removal.is_empty() {
                let _ = writeln!(
                    out,
                    "{} rules left the tags and wait for their grace period before removal.\n",
                    p.pending_removal.len()
                );
            }
        }
        for w in &r.warnings {
            let _ = writeln!(out, "- :warning: {}", one_line(w));
        }
    }
    out
}

/// Text on one line, with Markdown's table and HTML characters neutralised.
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
        .replace('<', "&lt;")
}

/// Colours for a terminal: additions green, removals and refusals red,
/// warnings and over-admitting blocks yellow, target headings bold. Applied
/// to the finished human text, so every renderer stays plain and testable.
pub fn paint(text: &str) -> String {
    const GREEN: &str = "\x1b[32m";
    const RED: &str = "\x1b[31m";
    const YELLOW: &str = "\x1b[33m";
    const BOLD: &str = "\x1b[1m";
    const RESET: &str = "\x1b[0m";
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        let colour = if body.starts_with("+ ") {
            Some(GREEN)
        } else if body.starts_with("- ")
            || body.starts_with("refused (")
            || body.starts_with("error:")
            || body.starts_with("drift")
        {
            Some(RED)
        } else if body.starts_with("warning:") || body.starts_with("~ ") {
            Some(YELLOW)
        } else if line.starts_with("target ") {
            Some(BOLD)
        } else {
            None
        };
        match colour {
            Some(c) => {
                let (content, newline) = match line.strip_suffix('\n') {
                    Some(c) => (c, "\n"),
                    None => (line, ""),
                };
                let _ = write!(out, "{c}{content}{RESET}{newline}");
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Colour only on a terminal, and never with `NO_COLOR` set (no-color.org)
/// or `TERM=dumb`.
pub fn colour_wanted(stdout_is_terminal: bool) -> bool {
    stdout_is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_colours_by_line_and_keeps_the_text() {
        let text = "target a (event-hubs): planned\n  + 10.0.0.0/24\n  - 10.1.0.0/24\n  warning: x\n  refused (budget): y\nplain";
        let painted = paint(text);
        assert_eq!(
            painted,
            "\u{1b}[1mtarget a (event-hubs): planned\u{1b}[0m\n\u{1b}[32m  + 10.0.0.0/24\u{1b}[0m\n\u{1b}[31m  - 10.1.0.0/24\u{1b}[0m\n\u{1b}[33m  warning: x\u{1b}[0m\n\u{1b}[31m  refused (budget): y\u{1b}[0m\nplain"
        );
        let stripped: String = painted
            .replace("\u{1b}[0m", "")
            .replace("\u{1b}[1m", "")
            .replace("\u{1b}[31m", "")
            .replace("\u{1b}[32m", "")
            .replace("\u{1b}[33m", "");
        assert_eq!(stripped, text);
    }
}
