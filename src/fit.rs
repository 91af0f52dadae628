//! Fitting a prefix set into a rule budget, exactly when possible, optimally
//! when not.
//!
//! The lossless form (aggregated) is used when it fits. Otherwise, with
//! `overflow = "summarize"`, [`summarize`] chooses at most `budget` CIDR
//! blocks that cover every selected address and admit the fewest extra
//! addresses possible: an exact optimum, not a greedy guess.
//!
//! How: an optimal cover can always be made of disjoint blocks, each the
//! smallest block holding a run of the (sorted, aggregated) prefixes, that
//! is a node of the path-compressed binary trie over them. A dynamic program
//! over that trie computes, for every node and every rule count, the fewest
//! extra addresses covering the node's prefixes. A node either becomes one
//! block (if not broader than the bound) or leaves its two children to cover
//! themselves. Each node's table is cut at the budget and at the rules its
//! subtree needs at most, so the merges cost O(prefixes x budget) overall.
//! The cost model is the target's: on Storage a /31 is two rules (it is
//! written as two addresses), so a lone /31 may be cheaper as its /30.
//! IPv4 and IPv6 are solved separately and their tables combined.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::prefix::PrefixSet;

/// How a target's rules are counted.
/// What to do when the selected prefixes do not fit a target's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Refuse the target, with the numbers and the alternatives.
    #[default]
    Fail,
    /// Cover the prefixes with the fewest extra addresses the budget allows.
    Summarize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostModel {
    /// An IPv4 /31 is written as two single-address rules (Storage).
    pub split_31: bool,
}

impl CostModel {
    pub fn rules(&self, net: &IpNet) -> usize {
        match net {
            IpNet::V4(n) if self.split_31 && n.prefix_len() == 31 => 2,
            _ => 1,
        }
    }

    pub fn rules_of(&self, set: &PrefixSet) -> usize {
        set.iter().map(|n| self.rules(&n)).sum()
    }
}

/// The user's bounds on summarizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// No IPv4 block broader than this (default /16).
    pub min_prefix_len_v4: u8,
    /// No IPv6 block broader than this (default /48).
    pub min_prefix_len_v6: u8,
    /// Refuse if even the optimum admits more addresses than this.
    pub max_extra_addresses: Option<u128>,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            min_prefix_len_v4: 16,
            min_prefix_len_v6: 48,
            max_extra_addresses: None,
        }
    }
}

/// A block of a summarized set that admits addresses outside the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverAdmitting {
    pub block: IpNet,
    /// Addresses in the block that no selected prefix holds.
    pub extra_addresses: u128,
}

/// The result of summarizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The chosen blocks (before the target's own rule forms).
    pub blocks: PrefixSet,
    pub rules: usize,
    pub over_admitting: Vec<OverAdmitting>,
    pub extra_addresses: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    #[error(
        "no summary fits {budget} rules without blocks broader than /{min_v4} (IPv4) or /{min_v6} (IPv6); the smallest budget that works is {smallest}"
    )]
    Infeasible {
        budget: usize,
        smallest: usize,
        min_v4: u8,
        min_v6: u8,
    },
    #[error(
        "the best summary in {budget} rules admits {extra} addresses outside the tag, more than summarize_max_extra_addresses = {limit}"
    )]
    TooManyExtra {
        budget: usize,
        extra: u128,
        limit: u128,
    },
}

const INF: u128 = u128::MAX;

/// One address family's parameters.
#[derive(Debug, Clone, Copy)]
struct Family {
    width: u8,
    split_31: bool,
    min_len: u8,
}

impl Family {
    fn cost(&self, len: u8) -> usize {
        if self.split_31 && self.width == 32 && len == 31 {
            2
        } else {
            1
        }
    }

    fn size(&self, len: u8) -> u128 {
        let host = u32::from(self.width - len);
        if host >= 128 { INF } else { 1u128 << host }
    }

    fn mask(&self, len: u8) -> u128 {
        if len == 0 {
            return 0;
        }
        let ones = if self.width == 128 {
            u128::MAX
        } else {
            (1u128 << self.width) - 1
        };
        ones & !self.size(len).wrapping_sub(1)
    }

    /// Whether a lone /31 may be replaced by its /30 (one rule, two extra
    /// addresses instead of two rules).
    fn slash30_option(&self, len: u8) -> bool {
        self.cost(len) == 2 && self.min_len <= 30
    }
}

/// A node of the compressed trie. Nodes are stored children first, so index
/// order is a valid bottom-up order.
struct Node {
    addr: u128,
    len: u8,
    /// Addresses of selected prefixes under this node.
    covered: u128,
    children: Option<(usize, usize)>,
    /// Rules of the exact cover (the prefixes as they are).
    exact_rules: usize,
}

fn build(f: &Family, p: &[(u128, u8)], nodes: &mut Vec<Node>) -> usize {
    if let [(addr, len)] = p {
        nodes.push(Node {
            addr: *addr,
            len: *len,
            covered: f.size(*len),
            children: None,
            exact_rules: f.cost(*len),
        });
        return nodes.len() - 1;
    }
    let (first, last) = (p[0], p[p.len() - 1]);
    let diff = (first.0 ^ last.0) << (128 - u32::from(f.width));
    let common = if diff == 0 {
        f.width
    } else {
        diff.leading_zeros() as u8
    };
    let len = common.min(first.1).min(last.1);
    let addr = first.0 & f.mask(len);
    let bit = 1u128 << (u32::from(f.width) - u32::from(len) - 1);
    let split = p.partition_point(|(a, _)| a & bit == 0);
    let left = build(f, &p[..split], nodes);
    let right = build(f, &p[split..], nodes);
    let covered = nodes[left].covered.saturating_add(nodes[right].covered);
    let exact_rules = nodes[left].exact_rules + nodes[right].exact_rules;
    nodes.push(Node {
        addr,
        len,
        covered,
        children: Some((left, right)),
        exact_rules,
    });
    nodes.len() - 1
}

#[derive(Clone, Copy)]
enum Choice {
    Exact,
    Slash30,
    Block,
    Split(usize),
}

/// `best[k]`: fewest extra addresses covering a node with exactly k rules.
struct Table {
    best: Vec<u128>,
    how: Vec<Choice>,
}

/// The DP of one family: a table per node, the root's table last.
struct FamilyDp {
    f: Family,
    nodes: Vec<Node>,
    tables: Vec<Table>,
}

impl FamilyDp {
    fn run(f: Family, prefixes: &[(u128, u8)], budget: usize) -> Self {
        let mut nodes = Vec::with_capacity(prefixes.len() * 2);
        if !prefixes.is_empty() {
            build(&f, prefixes, &mut nodes);
        }
        let mut tables: Vec<Table> = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let cap = node.exact_rules.min(budget);
            let mut best = vec![INF; cap + 1];
            let mut how = vec![Choice::Exact; cap + 1];
            match node.children {
                None => {
                    if node.exact_rules <= cap {
                        best[node.exact_rules] = 0;
                    }
                    if f.slash30_option(node.len) && cap >= 1 {
                        best[1] = 2;
                        how[1] = Choice::Slash30;
                    }
                }
                Some((l, r)) => {
                    let (tl, tr) = (&tables[l], &tables[r]);
                    for (i, &a) in tl.best.iter().enumerate().filter(|(_, a)| **a != INF) {
                        for (j, &b) in tr.best.iter().enumerate().take(cap + 1 - i.min(cap)) {
                            if b != INF && i + j <= cap && a.saturating_add(b) < best[i + j] {
                                best[i + j] = a.saturating_add(b);
                                how[i + j] = Choice::Split(i);
                            }
                        }
                    }
                    let c = f.cost(node.len);
                    if node.len >= f.min_len && c <= cap {
                        let extra = f.size(node.len).saturating_sub(node.covered);
                        if extra < best[c] {
                            best[c] = extra;
                            how[c] = Choice::Block;
                        }
                    }
                }
            }
            tables.push(Table { best, how });
        }
        Self { f, nodes, tables }
    }

    /// The root's table (exactly k rules); `[0]` for an empty family.
    fn root(&self) -> Vec<u128> {
        self.tables
            .last()
            .map_or_else(|| vec![0], |t| t.best.clone())
    }

    fn blocks(&self, k: usize, out: &mut Vec<(u128, u8)>) {
        if !self.nodes.is_empty() {
            self.walk(self.nodes.len() - 1, k, out);
        }
    }

    fn walk(&self, v: usize, k: usize, out: &mut Vec<(u128, u8)>) {
        let node = &self.nodes[v];
        match (self.tables[v].how[k], node.children) {
            (Choice::Split(i), Some((l, r))) => {
                self.walk(l, i, out);
                self.walk(r, k - i, out);
            }
            (Choice::Slash30, _) => out.push((node.addr & self.f.mask(30), 30)),
            _ => out.push((node.addr, node.len)),
        }
    }

    /// The fewest rules any cover within the bounds needs.
    fn min_rules(&self) -> usize {
        let mut m = vec![0usize; self.nodes.len()];
        for (v, node) in self.nodes.iter().enumerate() {
            m[v] = match node.children {
                None if self.f.slash30_option(node.len) => 1,
                None => node.exact_rules,
                Some((l, r)) if node.len >= self.f.min_len => 1.min(m[l] + m[r]),
                Some((l, r)) => m[l] + m[r],
            };
        }
        m.last().copied().unwrap_or(0)
    }
}

fn v4_bits(n: &Ipv4Net) -> (u128, u8) {
    (u128::from(u32::from(n.network())), n.prefix_len())
}

fn v6_bits(n: &Ipv6Net) -> (u128, u8) {
    (u128::from(n.network()), n.prefix_len())
}

fn to_net(width: u8, (addr, len): (u128, u8)) -> Option<IpNet> {
    if width == 32 {
        let a = std::net::Ipv4Addr::from(u32::try_from(addr).ok()?);
        Ipv4Net::new(a, len).ok().map(IpNet::V4)
    } else {
        Ipv6Net::new(std::net::Ipv6Addr::from(addr), len)
            .ok()
            .map(IpNet::V6)
    }
}

/// The blocks that admit addresses outside `exact`, with how many. One
/// merge walk: both sets are sorted and free of overlaps, and every exact
/// prefix lies in exactly one block, so the prefixes inside a block are the
/// next ones in order.
fn over_admitting(blocks: &PrefixSet, exact: &PrefixSet) -> Vec<OverAdmitting> {
    let mut prefixes = exact.iter().peekable();
    let mut out = Vec::new();
    for b in blocks.iter() {
        // Prefixes before this block belong to no block (never, for a
        // summary of `exact`, but the walk must not stall on one).
        while prefixes.next_if(|p| !b.contains(p) && *p < b).is_some() {}
        let mut inside: u128 = 0;
        while let Some(p) = prefixes.next_if(|p| b.contains(p)) {
            inside += address_count(&p);
        }
        let extra = address_count(&b).saturating_sub(inside);
        if extra > 0 {
            out.push(OverAdmitting {
                block: b,
                extra_addresses: extra,
            });
        }
    }
    out
}

/// Covers `selected` with at most `budget` rules admitting the fewest
/// extra addresses. When its lossless form fits, that is the answer.
pub fn summarize(
    selected: &PrefixSet,
    budget: usize,
    cost: CostModel,
    bounds: &Bounds,
) -> Result<Summary, FitError> {
    let exact = selected.aggregate();
    let exact_rules = cost.rules_of(&exact);
    if exact_rules <= budget {
        return Ok(Summary {
            blocks: exact,
            rules: exact_rules,
            over_admitting: Vec::new(),
            extra_addresses: 0,
        });
    }
    let v4: Vec<(u128, u8)> = exact.v4().iter().map(v4_bits).collect();
    let v6: Vec<(u128, u8)> = exact.v6().iter().map(v6_bits).collect();
    let f4 = Family {
        width: 32,
        split_31: cost.split_31,
        min_len: bounds.min_prefix_len_v4,
    };
    let f6 = Family {
        width: 128,
        split_31: false,
        min_len: bounds.min_prefix_len_v6,
    };
    let dp4 = FamilyDp::run(f4, &v4, budget);
    let dp6 = FamilyDp::run(f6, &v6, budget);
    let (t4, t6) = (dp4.root(), dp6.root());
    let mut best: Option<(u128, usize, usize)> = None;
    for (i, &a) in t4.iter().enumerate().filter(|(_, a)| **a != INF) {
        for (j, &b) in t6.iter().enumerate().take(budget + 1 - i.min(budget)) {
            if b == INF || i + j > budget {
                continue;
            }
            let total = a.saturating_add(b);
            if best.is_none_or(|(t, bi, bj)| total < t || (total == t && i + j < bi + bj)) {
                best = Some((total, i, j));
            }
        }
    }
    let Some((extra, k4, k6)) = best else {
        return Err(FitError::Infeasible {
            budget,
            smallest: dp4.min_rules() + dp6.min_rules(),
            min_v4: bounds.min_prefix_len_v4,
            min_v6: bounds.min_prefix_len_v6,
        });
    };
    if let Some(limit) = bounds.max_extra_addresses
        && extra > limit
    {
        return Err(FitError::TooManyExtra {
            budget,
            extra,
            limit,
        });
    }
    let mut raw4 = Vec::new();
    dp4.blocks(k4, &mut raw4);
    let mut raw6 = Vec::new();
    dp6.blocks(k6, &mut raw6);
    let blocks = PrefixSet::from_nets(
        raw4.into_iter()
            .filter_map(|b| to_net(32, b))
            .chain(raw6.into_iter().filter_map(|b| to_net(128, b))),
    );
    let over_admitting = over_admitting(&blocks, &exact);
    Ok(Summary {
        rules: cost.rules_of(&blocks),
        extra_addresses: over_admitting
            .iter()
            .map(|o| o.extra_addresses)
            .fold(0, u128::saturating_add),
        blocks,
        over_admitting,
    })
}

pub fn address_count(n: &IpNet) -> u128 {
    let host = u32::from(n.max_prefix_len() - n.prefix_len());
    1u128.checked_shl(host).unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> PrefixSet {
        PrefixSet::parse_all(items.iter().copied())
            .expect("valid")
            .0
    }

    const PLAIN: CostModel = CostModel { split_31: false };

    #[test]
    fn lossless_when_it_fits() {
        let s = summarize(
            &set(&["20.0.0.0/29", "20.0.0.8/29", "20.1.0.0/24"]),
            2,
            PLAIN,
            &Bounds::default(),
        )
        .expect("fits");
        assert_eq!(s.blocks, set(&["20.0.0.0/28", "20.1.0.0/24"]));
        assert_eq!(s.extra_addresses, 0);
    }

    #[test]
    fn the_over_admitting_walk_agrees_with_the_direct_count() {
        let exact = set(&[
            "20.0.0.0/29",
            "20.0.0.16/29",
            "20.0.4.0/29",
            "20.1.0.0/24",
            "2603:1000::/48",
            "2603:1000:2::/48",
        ]);
        let blocks = set(&[
            "20.0.0.0/27",
            "20.0.4.0/29",
            "20.1.0.0/23",
            "2603:1000::/46",
        ]);
        let direct: Vec<OverAdmitting> = blocks
            .iter()
            .filter_map(|b| {
                let inside: u128 = exact
                    .iter()
                    .filter(|p| b.contains(p))
                    .map(|p| address_count(&p))
                    .sum();
                let extra = address_count(&b) - inside;
                (extra > 0).then_some(OverAdmitting {
                    block: b,
                    extra_addresses: extra,
                })
            })
            .collect();
        assert_eq!(over_admitting(&blocks, &exact), direct);
        assert_eq!(direct.len(), 3);
    }

    #[test]
    fn merges_the_closest_pair_first() {
        let s = summarize(
            &set(&["20.0.0.0/29", "20.0.0.16/29", "20.0.4.0/29"]),
            2,
            PLAIN,
            &Bounds::default(),
        )
        .expect("fits");
        // Covering the two near /29s with a /27 admits 16 extra addresses.
        assert_eq!(s.blocks, set(&["20.0.0.0/27", "20.0.4.0/29"]));
        assert_eq!(s.extra_addresses, 16);
        assert_eq!(
            s.over_admitting,
            vec![OverAdmitting {
                block: "20.0.0.0/27".parse().expect("net"),
                extra_addresses: 16
            }]
        );
    }

    #[test]
    fn storage_counts_a_31_as_two_rules() {
        let storage = CostModel { split_31: true };
        // Lossless: the /31 costs two rules, the /32 one: 3 > 2.
        let s = summarize(
            &set(&["20.0.0.2/31", "20.9.0.1/32"]),
            2,
            storage,
            &Bounds::default(),
        )
        .expect("fits");
        assert_eq!(s.blocks, set(&["20.0.0.0/30", "20.9.0.1/32"]));
        assert_eq!(s.rules, 2);
        assert_eq!(s.extra_addresses, 2);
    }

    #[test]
    fn bounds_refuse_with_the_smallest_budget_that_works() {
        let spread = set(&["20.0.0.0/32", "21.0.0.0/32", "22.0.0.0/32"]);
        let err = summarize(&spread, 1, PLAIN, &Bounds::default()).unwrap_err();
        assert_eq!(
            err,
            FitError::Infeasible {
                budget: 1,
                smallest: 3,
                min_v4: 16,
                min_v6: 48
            }
        );
        let near = set(&["20.0.0.0/32", "20.0.0.9/32"]);
        let capped = Bounds {
            max_extra_addresses: Some(10),
            ..Bounds::default()
        };
        assert!(matches!(
            summarize(&near, 1, PLAIN, &capped),
            Err(FitError::TooManyExtra { extra: 14, .. })
        ));
    }

    #[test]
    fn families_share_the_budget() {
        let s = summarize(
            &set(&[
                "20.0.0.0/32",
                "20.0.0.2/32",
                "2603:1000::/64",
                "2603:1000:0:1::/64",
            ]),
            2,
            PLAIN,
            &Bounds::default(),
        )
        .expect("fits");
        assert_eq!(s.blocks, set(&["20.0.0.0/30", "2603:1000::/63"]));
        assert_eq!(s.extra_addresses, 2);
    }
}
