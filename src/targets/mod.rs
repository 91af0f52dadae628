//! Targets: the Azure resources whose IP rules tagsync manages.
//!
//! One [`Adapter`] per kind of resource, one file each, and [`REGISTRY`]
//! lists them; [`adapter_of`] finds a resource id's adapter by its provider.
//! An adapter reads the whole live rule set, says what the resource can
//! hold, turns desired prefixes into the exact rules the kind stores, and
//! writes a whole rule set back with every other field preserved. Adding a
//! kind (SQL, Cosmos DB) is one new file and one line in [`REGISTRY`].

mod eventgrid;
mod eventhubs;
mod keyvault;
mod network_rule_set;
mod servicebus;
mod storage;

use std::net::IpAddr;

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::Value;

use crate::azure::arm::{ArmError, Transport};
use crate::plan::{Capabilities, LiveRules};
use crate::prefix::PrefixSet;
use crate::tags::TagState;

/// A parsed ARM resource id of a supported kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub subscription: String,
    pub resource_group: String,
    /// `Microsoft.EventHub/namespaces`, as written in the id.
    pub provider: String,
    pub name: String,
    /// The id as configured, without a trailing slash.
    pub id: String,
}

impl ResourceId {
    pub fn parse(id: &str) -> Result<Self, String> {
        let trimmed = id.trim().trim_end_matches('/');
        if trimmed.contains('<') || trimmed.contains('>') {
            return Err(format!(
                "`{id}` still holds a placeholder (`<...>`); put the resource's real id there (the portal's JSON view or `az resource show --query id`)"
            ));
        }
        let parts: Vec<&str> = trimmed.split('/').collect();
        if parts.len() > 9
            && parts.len() % 2 == 1
            && parts
                .get(5)
                .is_some_and(|p| p.eq_ignore_ascii_case("providers"))
        {
            // A child resource: an event hub, a queue, a topic of a namespace.
            let parent = parts[..9].join("/");
            return Err(format!(
                "`{id}` is a {} inside a resource; tagsync manages the firewall of the resource itself: use `{parent}`",
                parts[9]
            ));
        }
        let ok = parts.len() == 9
            && parts[0].is_empty()
            && parts[1].eq_ignore_ascii_case("subscriptions")
            && parts[3].eq_ignore_ascii_case("resourceGroups")
            && parts[5].eq_ignore_ascii_case("providers")
            && parts.iter().skip(1).all(|p| !p.is_empty());
        if !ok {
            return Err(format!(
                "`{id}` is not a resource id of the form /subscriptions/<sub>/resourceGroups/<rg>/providers/<Namespace>/<type>/<name>"
            ));
        }
        let guid = |s: &str| {
            let groups: Vec<&str> = s.split('-').collect();
            groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
                && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        };
        if !guid(parts[2]) {
            return Err(format!(
                "`{id}`: the subscription `{}` is not a subscription id (a GUID like 00000000-0000-0000-0000-000000000000)",
                parts[2]
            ));
        }
        Ok(Self {
            subscription: parts[2].to_owned(),
            resource_group: parts[4].to_owned(),
            provider: format!("{}/{}", parts[6], parts[7]),
            name: parts[8].to_owned(),
            id: trimmed.to_owned(),
        })
    }

    /// Same resource, ignoring case (ARM ids are case-insensitive and come
    /// back re-cased).
    pub fn same_as(&self, other: &str) -> bool {
        self.id.eq_ignore_ascii_case(other.trim_end_matches('/'))
    }
}

/// A configured target, validated.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub name: String,
    pub resource: ResourceId,
    /// The adapter of the target's kind.
    pub adapter: &'static dyn Adapter,
    /// Tags this target follows (names as resolved against the feed).
    pub selection: crate::tags::TagSelection,
    pub ipv6: bool,
    pub max_rules: Option<usize>,
    pub removal_grace: std::time::Duration,
    pub max_removal_ratio: f64,
    pub overflow: crate::fit::Overflow,
    pub fit_bounds: crate::fit::Bounds,
}

/// Every kind of target: one line each.
pub static REGISTRY: &[&dyn Adapter] = &[
    &eventhubs::EVENT_HUBS,
    &servicebus::SERVICE_BUS,
    &storage::STORAGE,
    &eventgrid::TOPICS,
    &eventgrid::DOMAINS,
    &keyvault::KEY_VAULT,
];

/// The adapter for a resource id's provider (ARM providers are
/// case-insensitive).
pub fn adapter_of(resource: &ResourceId) -> Result<&'static dyn Adapter, String> {
    REGISTRY
        .iter()
        .copied()
        .find(|a| a.provider().eq_ignore_ascii_case(&resource.provider))
        .ok_or_else(|| {
            let known: Vec<&str> = REGISTRY.iter().map(|a| a.provider()).collect();
            format!(
                "`{}` is a {} resource; tagsync manages {}",
                resource.id,
                resource.provider,
                known.join(", ")
            )
        })
}

impl std::fmt::Debug for dyn Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A resource as read: its facts and its whole live rule set.
///
/// When `facts.unsupported` is set (a tier that cannot hold IP rules) the
/// adapter stopped after the facts: `rules` and `raw` are empty and the
/// pipeline refuses the target before anything looks at them.
#[derive(Debug, Clone)]
pub struct LiveState {
    pub facts: ResourceFacts,
    pub rules: LiveRules,
    /// The whole object the rules live in (`properties` of the network rule
    /// set, or `networkAcls`), written back with only the IP rules changed.
    pub raw: Value,
    pub default_action: Option<String>,
    pub public_network_access: Option<String>,
    pub trusted_service_access: Option<bool>,
    /// Digest of `raw`: a plan applies only to the state it was made on.
    pub fingerprint: String,
}

impl LiveState {
    pub fn fingerprint_of(raw: &Value) -> String {
        crate::digest::sha256_hex(raw.to_string().as_bytes())
    }

    /// A resource whose tier cannot hold IP rules: its facts only.
    pub fn unsupported(facts: ResourceFacts) -> Self {
        Self {
            facts,
            rules: LiveRules::default(),
            raw: Value::Null,
            default_action: None,
            public_network_access: None,
            trusted_service_access: None,
            fingerprint: String::new(),
        }
    }
}

/// The desired prefixes in a target's rule form, and what could not be.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    pub rules: PrefixSet,
    pub dropped: Vec<String>,
}

/// Facts from the resource itself (`targets check` and the tier guard).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ResourceFacts {
    pub sku: Option<String>,
    pub location: Option<String>,
    /// Why this resource cannot hold IP rules, if it cannot.
    pub unsupported: Option<String>,
    /// Whether the resource has IPv6 endpoints, where the kind says (an
    /// Event Hubs namespace's `ipV6Enabled`): IPv6 rules admit nothing
    /// without them.
    pub ipv6_endpoints: Option<bool>,
}

/// One kind of resource. Required: what it is (name, provider), what it can
/// hold, how to read and how to write; the rest has defaults.
#[async_trait]
pub trait Adapter: Send + Sync {
    /// The kind's name in reports, the ledger and metric labels.
    fn name(&self) -> &'static str;

    /// The resource-id provider it manages (`Microsoft.EventHub/namespaces`).
    fn provider(&self) -> &'static str;

    /// Whether the kind takes IPv6 rules at all (`ipv6 = true` is refused
    /// in the configuration otherwise).
    fn accepts_ipv6(&self) -> bool {
        true
    }

    /// Warnings specific to the kind, about the resource's own settings.
    fn resource_warnings(&self, _live: &LiveState, _tags: &[&TagState]) -> Vec<String> {
        Vec::new()
    }

    /// What the resource can hold.
    fn capabilities(&self, target: &TargetSpec) -> Capabilities;

    /// The desired prefixes this kind may hold. The default keeps public
    /// IPv4 prefixes, and IPv6 ones when enabled. The rule forms (a Storage
    /// /31 as two addresses) follow from the capabilities, after fitting.
    fn admissible(&self, desired: &PrefixSet, target: &TargetSpec) -> Normalized {
        normalize_public(desired, target.ipv6, false)
    }

    /// Reads the resource's facts and its whole live rule set, with one GET
    /// where the resource holds both. `known` is the facts an earlier read
    /// of this run found (a read-back after a write whose answer carried no
    /// resource): a kind whose facts cost a GET of their own does not ask
    /// again.
    async fn read(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        known: Option<&ResourceFacts>,
    ) -> Result<LiveState, ArmError>;

    /// The rules as the kind stores them, for export: the resource's
    /// property names and rule objects (`{"ipRules": [{"ipMask": .., "action": "Allow"}]}`).
    fn rule_objects(&self, rules: &PrefixSet) -> Value;

    /// Writes the rule set: `live.raw` with the IP rules for `add` appended
    /// and those for `remove` taken out. Returns the state Azure answered
    /// when the answer carries the whole resource: that answer is the
    /// stored state the write is verified against (`None` makes the
    /// pipeline read it back).
    async fn write(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        live: &LiveState,
        add: &PrefixSet,
        remove: &PrefixSet,
    ) -> Result<Option<LiveState>, ArmError>;
}

/// What a required field of a read must hold.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    Array,
    String,
}

/// A field a read must carry before anything is written from it: a rule
/// set written back without its `ipRules` or `virtualNetworkRules` would
/// delete foreign rules, and one without `defaultAction` or
/// `publicNetworkAccess` would take the API's defaults (Allow, Enabled) and
/// open the resource.
pub fn require<'v>(
    object: &'v Value,
    what: &str,
    name: &str,
    field: Field,
) -> Result<&'v Value, ArmError> {
    let value = &object[name];
    let ok = match field {
        Field::Array => value.is_array(),
        Field::String => value.is_string(),
    };
    if ok {
        return Ok(value);
    }
    let expected = match field {
        Field::Array => "a list",
        Field::String => "a string",
    };
    let found = if value.is_null() {
        "nothing"
    } else {
        "something else"
    };
    Err(ArmError::Invalid(format!(
        "the {what} read from Azure has {found} for `{name}` where Azure always sends {expected}; \
         tagsync never writes from an incomplete read, so nothing was written. Check the resource in the portal and run again"
    )))
}

/// Parses a rule value as stored by Azure (`1.2.3.4` or `1.2.3.0/24`).
pub fn parse_rule(value: &str) -> Option<IpNet> {
    crate::prefix::parse_prefix(value).ok().map(|(n, _)| n)
}

/// The value written for a prefix: a bare address for a single host (the
/// only form Storage accepts for one address), CIDR otherwise.
pub fn render_rule(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Keeps the prefixes a firewall rule may hold: public addresses only (a
/// service tag never lists private ranges; if one did, it is not written),
/// IPv6 only when enabled, and with `split_31` a /31 as its two addresses.
pub fn normalize_public(desired: &PrefixSet, ipv6: bool, split_31: bool) -> Normalized {
    let mut rules = Vec::new();
    let mut dropped = Vec::new();
    let mut skipped_v6 = 0;
    for net in desired.iter() {
        if let Some(why) = not_public(&net) {
            dropped.push(format!("{net} is {why}; not written"));
            continue;
        }
        match net {
            IpNet::V6(_) if !ipv6 => skipped_v6 += 1,
            IpNet::V4(v4) if split_31 && v4.prefix_len() == 31 => {
                rules.extend(v4.hosts().map(|a| IpNet::from(IpAddr::V4(a))));
            }
            n => rules.push(n),
        }
    }
    if skipped_v6 > 0 {
        dropped.push(format!(
            "{skipped_v6} IPv6 prefixes are not written (ipv6 = false for this target)"
        ));
    }
    Normalized {
        rules: PrefixSet::from_nets(rules),
        dropped,
    }
}

/// Why a prefix is not public, if it is not.
fn not_public(net: &IpNet) -> Option<&'static str> {
    let private_v4: [(&str, &str); 10] = [
        ("0.0.0.0/8", "a reserved range"),
        ("10.0.0.0/8", "a private (RFC 1918) range"),
        ("100.64.0.0/10", "shared address space (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "a private (RFC 1918) range"),
        ("192.168.0.0/16", "a private (RFC 1918) range"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "a reserved range"),
        ("192.0.2.0/24", "a documentation range"),
    ];
    let private_v6: [(&str, &str); 5] = [
        ("::/8", "a reserved range"),
        ("fc00::/7", "a unique local range"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
        ("2001:db8::/32", "a documentation range"),
    ];
    if net.prefix_len() == 0 {
        return Some("the whole address space (every address on the Internet)");
    }
    let table: &[(&str, &str)] = match net {
        IpNet::V4(_) => &private_v4,
        IpNet::V6(_) => &private_v6,
    };
    table.iter().find_map(|(range, why)| {
        let range: IpNet = range.parse().ok()?;
        (range.contains(net) || net.contains(&range)).then_some(*why)
    })
}

/// Builds the new rule list: live rule objects kept unless removed (foreign
/// ones exactly as they were, whatever their form), then one object per
/// added prefix: `{value_key: .., "action": action}`, or without `action`
/// for the kinds whose rules have none (Key Vault).
pub fn edit_rules(
    live_rules: &[Value],
    value_key: &str,
    action: Option<&str>,
    add: &PrefixSet,
    remove: &PrefixSet,
) -> Vec<Value> {
    let mut out: Vec<Value> = live_rules
        .iter()
        .filter(|r| {
            r[value_key]
                .as_str()
                .and_then(parse_rule)
                .is_none_or(|n| !remove.contains(&n))
        })
        .cloned()
        .collect();
    for net in add.iter() {
        let mut rule = serde_json::Map::new();
        rule.insert(value_key.to_owned(), Value::String(render_rule(&net)));
        if let Some(action) = action {
            rule.insert("action".to_owned(), Value::String(action.to_owned()));
        }
        out.push(Value::Object(rule));
    }
    out
}

/// Reads IP rules from a JSON array: the canonical set, plus how many rule
/// objects it could not parse or that repeat a prefix (they still count
/// against the budget and are kept).
pub fn read_rules(rules: &Value, value_key: &str) -> (PrefixSet, usize) {
    let items = rules.as_array().map(Vec::as_slice).unwrap_or_default();
    let nets: Vec<IpNet> = items
        .iter()
        .filter_map(|r| r[value_key].as_str().and_then(parse_rule))
        .collect();
    let set = PrefixSet::from_nets(nets);
    (set.clone(), items.len() - set.len())
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
    fn resource_ids_parse_and_infer_the_kind() {
        let id = ResourceId::parse(
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns/",
        )
        .expect("valid");
        assert_eq!(id.name, "ns");
        assert_eq!(adapter_of(&id).map(|a| a.name()), Ok("event-hubs"));
        let sa = ResourceId::parse(
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/microsoft.storage/storageAccounts/sa",
        )
        .expect("valid");
        assert_eq!(adapter_of(&sa).map(|a| a.name()), Ok("storage"));
        let kv = ResourceId::parse(
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v",
        )
        .expect("valid");
        assert_eq!(adapter_of(&kv).map(|a| a.name()), Ok("key-vault"));
        let sql = ResourceId::parse(
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Sql/servers/db",
        )
        .expect("valid");
        let err = adapter_of(&sql).map(|a| a.name()).unwrap_err();
        assert!(err.contains("Microsoft.Sql/servers"), "{err}");
        assert!(
            ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000000/providers/x")
                .is_err()
        );
        assert!(ResourceId::parse("ns").is_err());
    }

    #[test]
    fn storage_normalization_splits_31_and_drops_private_and_v6() {
        let n = normalize_public(
            &set(&[
                "20.0.0.0/31",
                "20.0.0.8/32",
                "10.1.0.0/16",
                "20.1.0.0/27",
                "2603:1000::/48",
            ]),
            false,
            true,
        );
        assert_eq!(
            n.rules,
            set(&["20.0.0.0/32", "20.0.0.1/32", "20.0.0.8/32", "20.1.0.0/27"])
        );
        assert_eq!(n.dropped.len(), 2);
        assert!(n.dropped[0].contains("RFC 1918"));
        let with_v6 = normalize_public(&set(&["2603:1000::/48", "fd00::/8"]), true, true);
        assert_eq!(with_v6.rules, set(&["2603:1000::/48"]));
    }

    #[test]
    fn editing_keeps_foreign_rules_verbatim() {
        let live = serde_json::json!([
            {"ipMask": "1.1.1.1", "action": "Allow"},
            {"ipMask": "20.0.0.0/29", "action": "Allow"},
            {"ipMask": "not-an-ip", "action": "Allow"}
        ]);
        let out = edit_rules(
            live.as_array().expect("array"),
            "ipMask",
            Some("Allow"),
            &set(&["20.0.1.5/32"]),
            &set(&["20.0.0.0/29"]),
        );
        assert_eq!(
            Value::Array(out),
            serde_json::json!([
                {"ipMask": "1.1.1.1", "action": "Allow"},
                {"ipMask": "not-an-ip", "action": "Allow"},
                {"ipMask": "20.0.1.5", "action": "Allow"}
            ])
        );
        let (set_read, extra) = read_rules(&live, "ipMask");
        assert_eq!(set_read, set(&["1.1.1.1/32", "20.0.0.0/29"]));
        assert_eq!(extra, 1);
    }
}
