//! `PrefixSet`: a canonical set of IPv4 and IPv6 CIDR prefixes.
//!
//! Everything tagsync prints, stores or compares goes through this type, so it
//! keeps one invariant: each family's prefixes are in their network form
//! (no host bits), sorted, and free of exact duplicates. Two sets holding the
//! same prefixes therefore render to byte-identical text, which is what makes
//! history hashes stable and a second run a no-op.
//!
//! Overlapping prefixes (a /24 and a /27 inside it) are kept as published:
//! the set models "the prefixes a tag lists". `aggregate` gives the smallest
//! list of prefixes covering exactly the same addresses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a prefix string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a CIDR prefix or IP address")]
pub struct InvalidPrefix {
    pub input: String,
}

/// A prefix string that had host bits set and was normalized to its network
/// (`20.1.2.3/24` -> `20.1.2.0/24`). Reported as a warning, never silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBitsNormalized {
    pub input: String,
    pub network: IpNet,
}

/// Parses one prefix as published in the feed. A bare address is accepted as
/// a host route (/32 or /128). Returns the canonical network and, when the
/// input had host bits set, the fact that it was normalized.
pub fn parse_prefix(input: &str) -> Result<(IpNet, bool), InvalidPrefix> {
    let trimmed = input.trim();
    let net = match IpNet::from_str(trimmed) {
        Ok(net) => net,
        Err(_) => match IpAddr::from_str(trimmed) {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                return Err(InvalidPrefix {
                    input: input.to_owned(),
                });
            }
        },
    };
    let network = net.trunc();
    Ok((network, network != net))
}

/// A canonical, sorted, deduplicated set of IPv4 and IPv6 prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PrefixSet {
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

impl PrefixSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from networks already in canonical form or not: host bits
    /// are cleared, order and duplicates do not matter.
    pub fn from_nets<I: IntoIterator<Item = IpNet>>(nets: I) -> Self {
        let mut set = Self::new();
        for net in nets {
            match net.trunc() {
                IpNet::V4(n) => set.v4.push(n),
                IpNet::V6(n) => set.v6.push(n),
            }
        }
        set.canonicalize();
        set
    }

    /// Parses prefixes, normalizing host bits. Returns the set and the inputs
    /// that had host bits set; the first unparsable input is an error.
    pub fn parse_all<'a, I: IntoIterator<Item = &'a str>>(
        inputs: I,
    ) -> Result<(Self, Vec<HostBitsNormalized>), InvalidPrefix> {
        let mut set = Self::new();
        let mut normalized = Vec::new();
        for input in inputs {
            let (net, had_host_bits) = parse_prefix(input)?;
            if had_host_bits {
                normalized.push(HostBitsNormalized {
                    input: input.to_owned(),
                    network: net,
                });
            }
            match net {
                IpNet::V4(n) => set.v4.push(n),
                IpNet::V6(n) => set.v6.push(n),
            }
        }
        set.canonicalize();
        Ok((set, normalized))
    }

    fn canonicalize(&mut self) {
        self.v4.sort_unstable();
        self.v4.dedup();
        self.v6.sort_unstable();
        self.v6.dedup();
    }

    pub fn v4(&self) -> &[Ipv4Net] {
        &self.v4
    }

    pub fn v6(&self) -> &[Ipv6Net] {
        &self.v6
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// All prefixes, IPv4 first, each family sorted.
    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4
            .iter()
            .map(|n| IpNet::V4(*n))
            .chain(self.v6.iter().map(|n| IpNet::V6(*n)))
    }

    pub fn contains(&self, net: &IpNet) -> bool {
        match net.trunc() {
            IpNet::V4(n) => self.v4.binary_search(&n).is_ok(),
            IpNet::V6(n) => self.v6.binary_search(&n).is_ok(),
        }
    }

    /// Prefixes in `self` that are not in `other` (exact prefix comparison).
    pub fn difference(&self, other: &Self) -> Self {
        Self {
            v4: sorted_difference(&self.v4, &other.v4),
            v6: sorted_difference(&self.v6, &other.v6),
        }
    }

    /// Prefixes in either set.
    pub fn union(&self, other: &Self) -> Self {
        let mut v4 = Vec::with_capacity(self.v4.len() + other.v4.len());
        v4.extend_from_slice(&self.v4);
        v4.extend_from_slice(&other.v4);
        let mut v6 = Vec::with_capacity(self.v6.len() + other.v6.len());
        v6.extend_from_slice(&self.v6);
        v6.extend_from_slice(&other.v6);
        let mut set = Self { v4, v6 };
        set.canonicalize();
        set
    }

    /// Prefixes in both sets.
    pub fn intersection(&self, other: &Self) -> Self {
        Self {
            v4: self
                .v4
                .iter()
                .filter(|n| other.v4.binary_search(n).is_ok())
                .copied()
                .collect(),
            v6: self
                .v6
                .iter()
                .filter(|n| other.v6.binary_search(n).is_ok())
                .copied()
                .collect(),
        }
    }

    /// The smallest list of prefixes covering exactly the same addresses:
    /// contained prefixes are dropped and adjacent siblings merged.
    pub fn aggregate(&self) -> Self {
        Self {
            v4: Ipv4Net::aggregate(&self.v4),
            v6: Ipv6Net::aggregate(&self.v6),
        }
    }

    /// Number of distinct IPv4 addresses covered (overlaps counted once).
    pub fn ipv4_addresses(&self) -> u64 {
        Ipv4Net::aggregate(&self.v4)
            .iter()
            .map(|n| 1u64 << (32 - u32::from(n.prefix_len())))
            .sum()
    }

    /// Number of distinct IPv6 addresses covered, saturating at `u128::MAX`
    /// (only `::/0` itself would overflow).
    pub fn ipv6_addresses(&self) -> u128 {
        Ipv6Net::aggregate(&self.v6)
            .iter()
            .map(|n| {
                let host_bits = 128 - u32::from(n.prefix_len());
                1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
            })
            .fold(0u128, u128::saturating_add)
    }

    /// The canonical text form: one prefix a line, IPv4 first, no trailing
    /// newline. History stores and hashes exactly this.
    pub fn to_lines(&self) -> String {
        let mut out = String::with_capacity(self.len() * 20);
        for (i, net) in self.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&net.to_string());
        }
        out
    }

    /// Reads the canonical text form back (empty string is the empty set).
    pub fn from_lines(text: &str) -> Result<Self, InvalidPrefix> {
        Self::parse_all(text.lines().filter(|l| !l.trim().is_empty())).map(|(set, _)| set)
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|n| n.to_string()).collect()
    }
}

impl FromIterator<IpNet> for PrefixSet {
    fn from_iter<I: IntoIterator<Item = IpNet>>(iter: I) -> Self {
        Self::from_nets(iter)
    }
}

/// Serialized as a list of prefix strings in canonical order.
impl serde::Serialize for PrefixSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|n| n.to_string()))
    }
}

impl<'de> serde::Deserialize<'de> for PrefixSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        PrefixSet::parse_all(items.iter().map(String::as_str))
            .map(|(set, _)| set)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PrefixSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_lines())
    }
}

fn sorted_difference<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for x in a {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        if j >= b.len() || b[j] != *x {
            out.push(*x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> PrefixSet {
        PrefixSet::parse_all(items.iter().copied())
            .expect("valid")
            .0
    }

    #[test]
    fn canonical_sorted_and_deduplicated() {
        let s = set(&["20.1.0.0/16", "2603:1000::/40", "10.0.0.0/8", "20.1.0.0/16"]);
        assert_eq!(s.to_lines(), "10.0.0.0/8\n20.1.0.0/16\n2603:1000::/40");
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn host_bits_are_normalized_and_reported() {
        let (s, warnings) = PrefixSet::parse_all(["20.1.2.3/24", "20.9.9.9/32"]).expect("valid");
        assert_eq!(s.to_lines(), "20.1.2.0/24\n20.9.9.9/32");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].input, "20.1.2.3/24");
    }

    #[test]
    fn bare_addresses_are_host_routes() {
        let s = set(&["20.1.2.3", "2001:db8::1"]);
        assert_eq!(s.to_lines(), "20.1.2.3/32\n2001:db8::1/128");
    }

    #[test]
    fn invalid_prefix_is_an_error_naming_it() {
        let err = PrefixSet::parse_all(["20.1.2.0/24", "20.1.2.300/24"]).unwrap_err();
        assert_eq!(err.input, "20.1.2.300/24");
        assert!(PrefixSet::parse_all(["1.2.3.0/33"]).is_err());
    }

    #[test]
    fn difference_and_address_counts() {
        let a = set(&["20.0.0.0/31", "20.0.0.2/31", "20.0.1.0/24", "2001:db8::/64"]);
        let b = set(&["20.0.1.0/24"]);
        assert_eq!(
            a.difference(&b).to_lines(),
            "20.0.0.0/31\n20.0.0.2/31\n2001:db8::/64"
        );
        assert_eq!(a.aggregate().v4().len(), 2);
        assert_eq!(a.ipv4_addresses(), 4 + 256);
        assert_eq!(a.ipv6_addresses(), 1u128 << 64);
    }

    #[test]
    fn text_form_round_trips() {
        let a = set(&["20.0.0.0/31", "2001:db8::/64"]);
        assert_eq!(PrefixSet::from_lines(&a.to_lines()).expect("valid"), a);
        assert!(PrefixSet::from_lines("").expect("valid").is_empty());
    }
}
