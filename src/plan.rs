//! The plan: what tagsync would change on one target, and why. A pure value.
//!
//! Computed from the desired rules (the selected tags' prefixes in the form
//! the target stores), the live rules, the ownership ledger, the target's
//! capabilities and the policy, it is the only input to applying. Dry-run
//! renders it and stops; `plan --out` saves it; `apply` writes exactly it.
//!
//! The rules it follows:
//! - Only owned rules are ever removed; every other rule is foreign and kept
//!   as it is. A desired prefix already present as a foreign rule stays
//!   foreign (it is not silently adopted).
//! - Add before remove: new prefixes are added at once; an owned prefix that
//!   left the tag is removed only once it has been out of the tag for
//!   `removal_grace`, so a lagging Azure never locks traffic out.
//! - Guards refuse, with the numbers: a rule set that would leave an Event
//!   Hubs or Service Bus namespace with no rules at all (which opens it to
//!   the Internet), removing more than `max_removal_ratio` of the owned
//!   rules in one run (unless forced), and a result over the rule budget.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::prefix::PrefixSet;

/// What a kind of target can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Maximum number of rules that count against the budget.
    pub budget: usize,
    /// Whether virtual network rules count against the same budget.
    pub vnet_rules_share_budget: bool,
    /// Whether an empty rule set opens the resource to the Internet.
    pub empty_means_open: bool,
    /// Whether an empty IP rule list under `defaultAction: Deny` locks every
    /// caller out (Key Vault): emptying an owned set needs `--force`.
    #[serde(default)]
    pub empty_locks_out: bool,
    pub ipv6: bool,
    /// An IPv4 /31 is stored as two single-address rules (Storage).
    pub split_31: bool,
}

/// One owned prefix in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    /// When tagsync last saw this prefix in the target's desired set
    /// (RFC 3339, the history's format).
    pub last_desired_at: String,
}

/// The ownership ledger of one target: the rules tagsync wrote.
pub type Ledger = BTreeMap<IpNet, Owned>;

/// The live state a plan is computed on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRules {
    /// IP rules, canonical (one prefix per rule).
    pub ip: PrefixSet,
    /// Virtual network rules present (they count when the budget is shared).
    pub vnet_rules: usize,
    /// IP rule objects that are not a parsable prefix or repeat one: kept
    /// as they are, and counted against the budget.
    pub other_ip_rules: usize,
    /// `publicNetworkAccess` is Disabled: no IP rule admits anything, and an
    /// empty rule set opens nothing.
    #[serde(default)]
    pub public_access_disabled: bool,
    /// `defaultAction` is Deny.
    #[serde(default)]
    pub default_deny: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub removal_grace: Duration,
    pub max_removal_ratio: f64,
    /// `--force`: lift the removal-ratio guard.
    pub force: bool,
}

/// The guard that refused a target. Its name is a metric label and part of
/// the JSON reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guard {
    /// The result would not fit the rule budget.
    Budget,
    /// The result would open a namespace to the Internet.
    EmptyRuleSet,
    /// Too many owned rules would go at once.
    RemovalRatio,
    /// The resource's tier cannot hold IP rules.
    Tier,
    /// A saved plan no longer matches the live rules.
    StalePlan,
}

impl Guard {
    pub fn as_str(self) -> &'static str {
        match self {
            Guard::Budget => "budget",
            Guard::EmptyRuleSet => "empty-rule-set",
            Guard::RemovalRatio => "removal-ratio",
            Guard::Tier => "tier",
            Guard::StalePlan => "stale-plan",
        }
    }
}

/// Why a plan is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub guard: Guard,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub used_before: usize,
    pub used_after: usize,
    pub budget: usize,
}

/// The plan for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetPlan {
    pub add: PrefixSet,
    pub remove: PrefixSet,
    /// Owned rules that stay (still desired).
    pub keep: PrefixSet,
    /// Owned rules that left the tag but are inside their grace period.
    pub pending_removal: PrefixSet,
    /// Live rules tagsync does not own; never touched.
    pub foreign: PrefixSet,
    /// Desired prefixes present as foreign rules (not adopted).
    pub desired_foreign: PrefixSet,
    /// The IP rules after applying.
    pub result: PrefixSet,
    pub capacity: Capacity,
    pub warnings: Vec<String>,
    pub refusals: Vec<Refusal>,
}

impl TargetPlan {
    pub fn has_changes(&self) -> bool {
        !self.add.is_empty() || !self.remove.is_empty()
    }

    pub fn refused(&self) -> bool {
        !self.refusals.is_empty()
    }
}

/// Computes the plan from the fitted desired rules (already in the
/// target's rule form) and the live state, once: the fit's refusal and its
/// alternatives are part of it, never added afterwards.
pub fn plan(
    fitted: &Fitted,
    live: &LiveRules,
    ledger: &Ledger,
    caps: &Capabilities,
    policy: &Policy,
    now: OffsetDateTime,
) -> TargetPlan {
    let desired = &fitted.rules;
    let owned_all = PrefixSet::from_nets(ledger.keys().copied());
    let owned_live = live.ip.intersection(&owned_all);
    let foreign = live.ip.difference(&owned_all);
    let desired_foreign = desired.intersection(&foreign);
    let add = desired.difference(&live.ip);
    let keep = owned_live.intersection(desired);
    let leaving = owned_live.difference(desired);

    let grace_over = |net: &IpNet| {
        ledger
            .get(net)
            .and_then(|o| parse_time(&o.last_desired_at))
            .is_none_or(|t| now - t >= policy.removal_grace)
    };
    // A leaving rule whose addresses the desired rules still cover (a block
    // re-summarized, two addresses merged) locks nobody out: it goes at
    // once, and does not count as a removal for the ratio guard.
    let desired_blocks = desired.aggregate();
    let covered = PrefixSet::from_nets(
        leaving
            .iter()
            .filter(|n| desired_blocks.iter().any(|d| d.contains(n))),
    );
    let mut remove = PrefixSet::from_nets(
        leaving
            .iter()
            .filter(|n| covered.contains(n) || grace_over(n)),
    );
    let mut pending_removal = leaving.difference(&remove);

    let extra = live.other_ip_rules
        + if caps.vnet_rules_share_budget {
            live.vnet_rules
        } else {
            0
        };
    let mut warnings = Vec::new();
    let mut refusals = Vec::new();

    // The rules that must be there: foreign, kept, added.
    let needed = foreign.len() + keep.len() + add.len() + extra;
    if needed + pending_removal.len() > caps.budget && needed <= caps.budget {
        // Rules in their grace period would push the set over the budget:
        // the leaving rules go first, so the new ones fit.
        warnings.push(format!(
            "{} rules that left the tag are removed before their grace period ends, so the {} new ones fit the budget of {}",
            pending_removal.len(),
            add.len(),
            caps.budget
        ));
        remove = remove.union(&pending_removal);
        pending_removal = PrefixSet::new();
    }
    let result = live.ip.difference(&remove).union(&add);
    let used_after = result.len() + extra;
    let capacity = Capacity {
        used_before: live.ip.len() + extra,
        used_after,
        budget: caps.budget,
    };

    if used_after > caps.budget && fitted.infeasible.is_none() {
        let mut message = format!(
            "the rule set needs {used_after} rules but the target holds {}: {} desired, {} foreign IP rules{}. \
             Select a regional sub-tag ([tags] regions or the target's tags) or raise max_rules if the resource allows more",
            caps.budget,
            desired.len(),
            foreign.len(),
            if caps.vnet_rules_share_budget && live.vnet_rules > 0 {
                format!(
                    ", {} virtual network rules sharing the budget",
                    live.vnet_rules
                )
            } else {
                String::new()
            }
        );
        if !fitted.report.alternatives.is_empty() {
            message = format!(
                "{message} Alternatives: {}",
                fitted.report.alternatives.join("; ")
            );
        }
        refusals.push(Refusal {
            guard: Guard::Budget,
            message,
        });
    }
    if caps.empty_means_open && result.is_empty() && live.vnet_rules == 0 {
        if live.public_access_disabled {
            warnings.push("the result has no IP and no virtual network rules; allowed because publicNetworkAccess is Disabled, so it opens nothing (it would open the namespace if public access were enabled again)".into());
        } else {
            refusals.push(Refusal {
                guard: Guard::EmptyRuleSet,
                message: "the result would have no IP and no virtual network rules, which opens the namespace to the Internet while public network access is enabled; refusing to write it".into(),
            });
        }
    }
    if caps.empty_locks_out
        && live.default_deny
        && result.is_empty()
        && !owned_live.is_empty()
        && !policy.force
    {
        refusals.push(Refusal {
            guard: Guard::EmptyRuleSet,
            message: format!(
                "the plan removes all {} IP rules while defaultAction is Deny, which locks out every caller but trusted services, VNets and private endpoints; \
                 check the feed, then run with --force if this is intended",
                owned_live.len()
            ),
        });
    }
    if !owned_live.is_empty() && !policy.force {
        let losing = remove.difference(&covered);
        let ratio = losing.len() as f64 / owned_live.len() as f64;
        if ratio > policy.max_removal_ratio {
            refusals.push(Refusal {
                guard: Guard::RemovalRatio,
                message: format!(
                    "the plan removes {} of the {} owned rules ({:.0}%), more than max_removal_ratio {:.0}%; \
                     check the feed, then run with --force if this is intended",
                    losing.len(),
                    owned_live.len(),
                    ratio * 100.0,
                    policy.max_removal_ratio * 100.0
                ),
            });
        }
    }
    if !desired_foreign.is_empty() {
        warnings.push(format!(
            "{} desired prefixes already exist as rules tagsync does not own; they are kept as they are (`tagsync targets adopt` takes them over)",
            desired_foreign.len()
        ));
    }
    if !pending_removal.is_empty() {
        warnings.push(format!(
            "{} prefixes left the tag and are kept until their removal grace period of {} ends",
            pending_removal.len(),
            humantime::format_duration(policy.removal_grace)
        ));
    }
    if let Some(why) = &fitted.infeasible {
        refusals.push(Refusal {
            guard: Guard::Budget,
            message: format!(
                "the tags need {} rules and the budget leaves {}: {why}",
                fitted.report.rules_needed, fitted.report.room
            ),
        });
    }
    let f = &fitted.report;
    if f.extra_addresses > 0 {
        warnings.push(format!(
            "summarized {} rules into {}: {} blocks admit {} addresses outside the tags",
            f.rules_needed,
            f.rules_after,
            f.over_admitting.len(),
            f.extra_addresses
        ));
    }
    TargetPlan {
        add,
        remove,
        keep,
        pending_removal,
        foreign,
        desired_foreign,
        result,
        capacity,
        warnings,
        refusals,
    }
}

/// How a target's desired prefixes were fitted into its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FitPolicy {
    /// The exact (aggregated) prefixes fit.
    Lossless,
    /// They did not fit and were summarized (overflow = "summarize").
    Summarize,
    /// They did not fit and the target is refused (overflow = "fail").
    Fail,
}

impl FitPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FitPolicy::Lossless => "lossless",
            FitPolicy::Summarize => "summarize",
            FitPolicy::Fail => "fail",
        }
    }
}

/// How a target's desired prefixes were fitted into its budget (reported
/// in the plan).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitReport {
    pub policy: FitPolicy,
    /// Rules the exact (aggregated) form needs.
    pub rules_needed: usize,
    /// Rules after fitting.
    pub rules_after: usize,
    /// Rules the budget leaves after foreign and shared rules.
    pub room: usize,
    /// Summarized blocks that admit addresses outside the tags.
    pub over_admitting: Vec<crate::fit::OverAdmitting>,
    pub extra_addresses: u128,
    /// For `fail`: what would fit instead.
    pub alternatives: Vec<String>,
}

/// The desired rules after fitting: the input of [`plan`].
#[derive(Debug, Clone)]
pub struct Fitted {
    pub rules: PrefixSet,
    pub report: FitReport,
    /// Why no summary within the bounds exists, when summarizing failed
    /// (the plan refuses the target with it).
    pub infeasible: Option<String>,
}

impl Fitted {
    /// Desired rules taken as they are (they fit).
    #[cfg(test)]
    pub fn lossless(rules: PrefixSet) -> Self {
        let n = rules.len();
        Self {
            rules,
            report: FitReport {
                policy: FitPolicy::Lossless,
                rules_needed: n,
                rules_after: n,
                room: n,
                over_admitting: Vec::new(),
                extra_addresses: 0,
                alternatives: Vec::new(),
            },
            infeasible: None,
        }
    }
}

/// What a target's fit depends on besides its prefixes.
#[derive(Debug, Clone, Copy)]
pub struct FitSettings<'a> {
    pub overflow: crate::fit::Overflow,
    pub bounds: &'a crate::fit::Bounds,
    /// The resource's region, named in the regional alternative.
    pub location: Option<&'a str>,
}

/// Aggregates the admissible prefixes losslessly; if that does not fit the
/// room, summarizes (overflow = "summarize") or prepares the refusal's
/// alternatives (overflow = "fail"). Pure.
pub fn fit(
    admissible: &PrefixSet,
    caps: &Capabilities,
    room: usize,
    settings: FitSettings<'_>,
) -> Fitted {
    use crate::fit::{CostModel, Overflow, summarize};
    let exact = admissible.aggregate();
    let cost = CostModel {
        split_31: caps.split_31,
    };
    let needed = cost.rules_of(&exact);
    let mut report = FitReport {
        policy: FitPolicy::Lossless,
        rules_needed: needed,
        rules_after: needed,
        room,
        over_admitting: Vec::new(),
        extra_addresses: 0,
        alternatives: Vec::new(),
    };
    let exact_rules = rule_forms(&exact, caps);
    if needed <= room {
        return Fitted {
            rules: exact_rules,
            report,
            infeasible: None,
        };
    }
    let summary = summarize(&exact, room, cost, settings.bounds);
    match settings.overflow {
        Overflow::Fail => {
            report.policy = FitPolicy::Fail;
            let region = settings
                .location
                .map(|l| l.to_ascii_lowercase().replace(' ', ""))
                .unwrap_or_else(|| "<region>".into());
            report.alternatives.push(format!(
                "select the regional sub-tag of this resource's region (regions = [\"{region}\"], with include_unassigned = true to keep the prefixes no region carries; `tagsync feed regions` lists them)"
            ));
            report.alternatives.push(match &summary {
                Ok(s) => format!(
                    "overflow = \"summarize\" fits it in {} rules admitting {} addresses outside the tags",
                    s.rules, s.extra_addresses
                ),
                Err(e) => format!("overflow = \"summarize\" cannot: {e}"),
            });
            Fitted {
                rules: exact_rules,
                report,
                infeasible: None,
            }
        }
        Overflow::Summarize => {
            report.policy = FitPolicy::Summarize;
            match summary {
                Ok(s) => {
                    report.rules_after = s.rules;
                    report.extra_addresses = s.extra_addresses;
                    report.over_admitting = s.over_admitting;
                    Fitted {
                        rules: rule_forms(&s.blocks, caps),
                        report,
                        infeasible: None,
                    }
                }
                Err(e) => Fitted {
                    rules: exact_rules,
                    report,
                    infeasible: Some(e.to_string()),
                },
            }
        }
    }
}

/// The rules a set of blocks is written as: with `split_31`, a /31 becomes
/// its two addresses.
pub fn rule_forms(blocks: &PrefixSet, caps: &Capabilities) -> PrefixSet {
    if !caps.split_31 {
        return blocks.clone();
    }
    PrefixSet::from_nets(blocks.iter().flat_map(|n| {
        match n {
            IpNet::V4(v4) if v4.prefix_len() == 31 => v4
                .hosts()
                .map(|a| IpNet::from(std::net::IpAddr::V4(a)))
                .collect(),
            other => vec![other],
        }
    }))
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> PrefixSet {
        PrefixSet::parse_all(items.iter().copied())
            .expect("valid")
            .0
    }

    /// The plan of desired rules that fit as they are.
    fn plan(
        desired: &PrefixSet,
        live: &LiveRules,
        ledger: &Ledger,
        caps: &Capabilities,
        policy: &Policy,
        now: OffsetDateTime,
    ) -> TargetPlan {
        super::plan(
            &Fitted::lossless(desired.clone()),
            live,
            ledger,
            caps,
            policy,
            now,
        )
    }

    fn caps(budget: usize) -> Capabilities {
        Capabilities {
            budget,
            vnet_rules_share_budget: false,
            empty_means_open: true,
            empty_locks_out: false,
            ipv6: false,
            split_31: false,
        }
    }

    fn policy() -> Policy {
        Policy {
            removal_grace: Duration::from_secs(7 * 86400),
            max_removal_ratio: 0.5,
            force: false,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse(
            "2026-11-22T12:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .expect("time")
    }

    fn ledger(items: &[(&str, &str)]) -> Ledger {
        items
            .iter()
            .map(|(p, t)| {
                (
                    p.parse::<IpNet>().expect("prefix"),
                    Owned {
                        last_desired_at: (*t).to_owned(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn adds_missing_keeps_foreign_and_never_adopts() {
        let live = LiveRules {
            ip: set(&["1.1.1.1/32", "20.0.0.0/29"]),
            vnet_rules: 1,
            other_ip_rules: 0,
            public_access_disabled: false,
            default_deny: false,
        };
        let p = plan(
            &set(&["20.0.0.0/29", "20.0.1.0/29"]),
            &live,
            &Ledger::new(),
            &caps(128),
            &policy(),
            now(),
        );
        assert_eq!(p.add, set(&["20.0.1.0/29"]));
        assert!(p.remove.is_empty());
        assert_eq!(p.foreign, set(&["1.1.1.1/32", "20.0.0.0/29"]));
        assert_eq!(p.desired_foreign, set(&["20.0.0.0/29"]));
        assert_eq!(p.result, set(&["1.1.1.1/32", "20.0.0.0/29", "20.0.1.0/29"]));
        assert!(!p.refused());
        assert!(p.warnings[0].contains("tagsync does not own"));
    }

    #[test]
    fn removal_waits_for_the_grace_period() {
        let live = LiveRules {
            ip: set(&["20.0.0.0/29", "20.0.1.0/29", "20.0.2.0/29"]),
            vnet_rules: 0,
            other_ip_rules: 0,
            public_access_disabled: false,
            default_deny: false,
        };
        let l = ledger(&[
            ("20.0.0.0/29", "2026-11-22T11:00:00Z"),
            ("20.0.1.0/29", "2026-11-20T12:00:00Z"),
            ("20.0.2.0/29", "2026-11-10T12:00:00Z"),
        ]);
        let desired = set(&["20.0.0.0/29", "20.0.3.0/29"]);
        let p = plan(&desired, &live, &l, &caps(128), &policy(), now());
        assert_eq!(p.add, set(&["20.0.3.0/29"]));
        assert_eq!(p.remove, set(&["20.0.2.0/29"]), "12 days out of the tag");
        assert_eq!(
            p.pending_removal,
            set(&["20.0.1.0/29"]),
            "2 days out of the tag"
        );
        assert_eq!(p.keep, set(&["20.0.0.0/29"]));
        assert_eq!(
            p.result,
            set(&["20.0.0.0/29", "20.0.1.0/29", "20.0.3.0/29"])
        );
    }

    #[test]
    fn an_empty_result_on_a_namespace_is_refused() {
        let live = LiveRules {
            ip: set(&["20.0.0.0/29"]),
            vnet_rules: 0,
            other_ip_rules: 0,
            public_access_disabled: false,
            default_deny: false,
        };
        let l = ledger(&[("20.0.0.0/29", "2026-01-01T00:00:00Z")]);
        let forced = Policy {
            force: true,
            ..policy()
        };
        let p = plan(&PrefixSet::new(), &live, &l, &caps(128), &forced, now());
        assert_eq!(p.refusals.len(), 1);
        assert_eq!(p.refusals[0].guard, Guard::EmptyRuleSet);
        // With public access disabled nothing opens: allowed, and said.
        let private = LiveRules {
            public_access_disabled: true,
            ..live.clone()
        };
        let p = plan(&PrefixSet::new(), &private, &l, &caps(128), &forced, now());
        assert!(!p.refused(), "{:?}", p.refusals);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("publicNetworkAccess is Disabled"))
        );
        // With a VNet rule left the namespace stays closed: allowed.
        let with_vnet = LiveRules {
            vnet_rules: 1,
            ..live
        };
        assert!(
            !plan(
                &PrefixSet::new(),
                &with_vnet,
                &l,
                &caps(128),
                &forced,
                now()
            )
            .refused()
        );
    }

    #[test]
    fn removing_more_than_the_ratio_needs_force() {
        let live = LiveRules {
            ip: set(&["20.0.0.0/29", "20.0.1.0/29", "20.0.2.0/29"]),
            vnet_rules: 0,
            other_ip_rules: 0,
            public_access_disabled: false,
            default_deny: false,
        };
        let old = "2026-01-01T00:00:00Z";
        let l = ledger(&[
            ("20.0.0.0/29", old),
            ("20.0.1.0/29", old),
            ("20.0.2.0/29", old),
        ]);
        let desired = set(&["20.0.0.0/29"]);
        let p = plan(&desired, &live, &l, &caps(128), &policy(), now());
        assert_eq!(p.refusals[0].guard, Guard::RemovalRatio);
        assert!(
            p.refusals[0]
                .message
                .contains("removes 2 of the 3 owned rules (67%)")
        );
        let forced = Policy {
            force: true,
            ..policy()
        };
        assert!(!plan(&desired, &live, &l, &caps(128), &forced, now()).refused());
    }

    #[test]
    fn over_budget_is_refused_with_the_numbers() {
        let live = LiveRules {
            ip: set(&["1.1.1.1/32"]),
            vnet_rules: 2,
            other_ip_rules: 0,
            public_access_disabled: false,
            default_deny: false,
        };
        let shared = Capabilities {
            vnet_rules_share_budget: true,
            ..caps(3)
        };
        let p = plan(
            &set(&["20.0.0.0/29"]),
            &live,
            &Ledger::new(),
            &shared,
            &policy(),
            now(),
        );
        assert_eq!(p.capacity.used_after, 4);
        assert_eq!(p.refusals[0].guard, Guard::Budget);
        assert!(
            p.refusals[0]
                .message
                .contains("needs 4 rules but the target holds 3"),
            "{}",
            p.refusals[0].message
        );
        assert!(p.refusals[0].message.contains("2 virtual network rules"));
    }

    #[test]
    fn leaving_rules_go_first_when_the_budget_is_tight() {
        let live = LiveRules {
            ip: set(&["20.0.0.0/29", "20.0.1.0/29"]),
            vnet_rules: 0,
            other_ip_rules: 0,
            public_access_disabled: false,
            default_deny: false,
        };
        let l = ledger(&[
            ("20.0.0.0/29", "2026-11-22T11:00:00Z"),
            ("20.0.1.0/29", "2026-11-22T11:00:00Z"),
        ]);
        let forced = Policy {
            force: true,
            ..policy()
        };
        let p = plan(
            &set(&["20.0.1.0/29", "20.0.2.0/29"]),
            &live,
            &l,
            &caps(2),
            &forced,
            now(),
        );
        assert_eq!(p.remove, set(&["20.0.0.0/29"]));
        assert!(p.pending_removal.is_empty());
        assert!(!p.refused());
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("removed before their grace period"))
        );
    }

    #[test]
    fn rules_still_covered_by_the_desired_set_go_at_once() {
        // Two owned /29s are now desired as one summarized /28: no address
        // is lost, so no grace period and no ratio guard.
        let live = LiveRules {
            ip: set(&["20.0.0.0/29", "20.0.0.8/29"]),
            vnet_rules: 0,
            other_ip_rules: 0,
            public_access_disabled: false,
            default_deny: false,
        };
        let l = ledger(&[
            ("20.0.0.0/29", "2026-11-22T11:00:00Z"),
            ("20.0.0.8/29", "2026-11-22T11:00:00Z"),
        ]);
        let p = plan(
            &set(&["20.0.0.0/28"]),
            &live,
            &l,
            &caps(128),
            &policy(),
            now(),
        );
        assert_eq!(p.add, set(&["20.0.0.0/28"]));
        assert_eq!(p.remove, set(&["20.0.0.0/29", "20.0.0.8/29"]));
        assert!(p.pending_removal.is_empty());
        assert!(!p.refused(), "{:?}", p.refusals);
    }

    #[test]
    fn a_second_plan_after_applying_has_no_changes() {
        let desired = set(&["20.0.0.0/29", "20.0.1.0/29"]);
        let first = plan(
            &desired,
            &LiveRules::default(),
            &Ledger::new(),
            &caps(128),
            &policy(),
            now(),
        );
        let ledger: Ledger = first
            .add
            .iter()
            .map(|n| {
                (
                    n,
                    Owned {
                        last_desired_at: "2026-11-22T12:00:00Z".into(),
                    },
                )
            })
            .collect();
        let live = LiveRules {
            ip: first.result.clone(),
            vnet_rules: 0,
            other_ip_rules: 0,
            public_access_disabled: false,
            default_deny: false,
        };
        let second = plan(&desired, &live, &ledger, &caps(128), &policy(), now());
        assert!(!second.has_changes());
        assert_eq!(second.keep, desired);
    }
}
