//! Storage accounts: `properties.networkAcls`, GET then PATCH of the whole
//! object (an omitted list comes back empty). 400 IP rules (older accounts
//! 200: set max_rules). Public IPv4 only in `ipRules`, no /31 or /32 CIDRs
//! (a /31 is written as its two addresses, a /32 as a bare address); IPv6
//! only in `ipv6Rules`, only when enabled.

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::Value;

use super::{
    Adapter, Field, LiveState, ResourceFacts, TargetSpec, edit_rules, read_rules, require,
};
use crate::azure::arm::{ArmError, Transport};
use crate::plan::{Capabilities, LiveRules};
use crate::prefix::PrefixSet;
use crate::tags::TagState;

pub const API_VERSION: &str = "2025-06-01";
const ACTION_READ: &str = "Microsoft.Storage/storageAccounts/read";
const ACTION_WRITE: &str = "Microsoft.Storage/storageAccounts/write";

pub struct Storage;

pub const STORAGE: Storage = Storage;

/// The account's facts and its `networkAcls`, from one GET (or the PATCH's
/// answer, which is the whole account).
fn state_from(account: &Value) -> Result<LiveState, ArmError> {
    let facts = ResourceFacts {
        sku: account["sku"]["name"].as_str().map(str::to_owned),
        location: account["location"].as_str().map(str::to_owned),
        unsupported: None,
        ipv6_endpoints: None,
    };
    let acls = account["properties"]
        .get("networkAcls")
        .filter(|a| a.is_object())
        .ok_or_else(|| {
            ArmError::Invalid("the storage account has no `properties.networkAcls` object".into())
        })?;
    let what = "storage account's networkAcls";
    let (v4, other_v4) = read_rules(require(acls, what, "ipRules", Field::Array)?, "value");
    // ipv6Rules is newer than the other fields (API 2025-01-01): absent on
    // accounts that never had one, and then written back absent.
    let (v6, other_v6) = read_rules(&acls["ipv6Rules"], "value");
    let vnet_rules = require(acls, what, "virtualNetworkRules", Field::Array)?
        .as_array()
        .map_or(0, Vec::len);
    let default_action = require(acls, what, "defaultAction", Field::String)?;
    let bypass = require(acls, what, "bypass", Field::String)?;
    Ok(LiveState {
        facts,
        rules: LiveRules {
            ip: v4.union(&v6),
            vnet_rules,
            other_ip_rules: other_v4 + other_v6,
            public_access_disabled: account["properties"]["publicNetworkAccess"].as_str()
                == Some("Disabled"),
            default_deny: default_action.as_str() == Some("Deny"),
        },
        default_action: default_action.as_str().map(str::to_owned),
        public_network_access: account["properties"]["publicNetworkAccess"]
            .as_str()
            .map(str::to_owned),
        trusted_service_access: bypass.as_str().map(|b| b.contains("AzureServices")),
        fingerprint: LiveState::fingerprint_of(acls),
        raw: acls.clone(),
    })
}

fn split(set: &PrefixSet) -> (PrefixSet, PrefixSet) {
    (
        PrefixSet::from_nets(set.iter().filter(|n| matches!(n, IpNet::V4(_)))),
        PrefixSet::from_nets(set.iter().filter(|n| matches!(n, IpNet::V6(_)))),
    )
}

#[async_trait]
impl Adapter for Storage {
    fn name(&self) -> &'static str {
        "storage"
    }

    fn provider(&self) -> &'static str {
        "Microsoft.Storage/storageAccounts"
    }

    /// IP rules do not apply to requests from the account's own region
    /// (FACTS 5): an ADT instance there reaches it from private addresses
    /// that no prefix admits. Said for every account, naming its region.
    fn resource_warnings(&self, live: &LiveState, tags: &[&TagState]) -> Vec<String> {
        let Some(loc) = &live.facts.location else {
            return Vec::new();
        };
        let same: Vec<&str> = tags
            .iter()
            .filter(|t| {
                let base = t.name.split('.').next().unwrap_or_default();
                t.name.contains('.') && crate::tags::region_matches(base, &t.name, &t.region, loc)
            })
            .map(|t| t.name.as_str())
            .collect();
        let selected = if same.is_empty() {
            String::new()
        } else {
            format!(" (the region of {})", same.join(", "))
        };
        vec![format!(
            "the storage account is in {loc}{selected}: IP rules do not apply to requests from the same region, so an Azure Digital Twins instance in {loc} is not admitted by them; use a resource instance rule or trusted access for it"
        )]
    }

    fn capabilities(&self, target: &TargetSpec) -> Capabilities {
        Capabilities {
            budget: target.max_rules.unwrap_or(400),
            vnet_rules_share_budget: false,
            empty_means_open: false,
            empty_locks_out: false,
            ipv6: target.ipv6,
            split_31: true,
        }
    }

    /// One GET: the account holds its facts and its rules.
    async fn read(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        _known: Option<&ResourceFacts>,
    ) -> Result<LiveState, ArmError> {
        let account = arm
            .get(&target.resource.id, API_VERSION, ACTION_READ)
            .await?;
        state_from(&account)
    }

    fn rule_objects(&self, rules: &PrefixSet) -> Value {
        let (v4, v6) = split(rules);
        let none = PrefixSet::new();
        let mut acls =
            serde_json::json!({ "ipRules": edit_rules(&[], "value", Some("Allow"), &v4, &none) });
        if !v6.is_empty() {
            acls["ipv6Rules"] = Value::Array(edit_rules(&[], "value", Some("Allow"), &v6, &none));
        }
        acls
    }

    async fn write(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        live: &LiveState,
        add: &PrefixSet,
        remove: &PrefixSet,
    ) -> Result<Option<LiveState>, ArmError> {
        let (add4, add6) = split(add);
        let (remove4, remove6) = split(remove);
        let mut acls = live.raw.clone();
        let v4 = acls["ipRules"].as_array().cloned().unwrap_or_default();
        acls["ipRules"] = Value::Array(edit_rules(&v4, "value", Some("Allow"), &add4, &remove4));
        if !add6.is_empty() || !remove6.is_empty() || acls.get("ipv6Rules").is_some() {
            let v6 = acls["ipv6Rules"].as_array().cloned().unwrap_or_default();
            acls["ipv6Rules"] =
                Value::Array(edit_rules(&v6, "value", Some("Allow"), &add6, &remove6));
        }
        let body = serde_json::json!({ "properties": { "networkAcls": acls } });
        let answer = arm
            .patch(&target.resource.id, API_VERSION, &body, ACTION_WRITE)
            .await?;
        Ok(state_from(&answer).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_on_every_account_and_names_a_selected_sub_tag_of_its_region() {
        let live = |loc: &str| {
            LiveState::unsupported(ResourceFacts {
                location: Some(loc.into()),
                ..ResourceFacts::default()
            })
        };
        let tag = |name: &str, region: &str| TagState {
            name: name.into(),
            region: region.into(),
            change_number: 1,
            prefixes: PrefixSet::new(),
        };
        let france = tag("AzureDigitalTwins.FranceCentral", "centralfrance");
        let global = tag("AzureDigitalTwins", "");
        let w = STORAGE.resource_warnings(&live("francecentral"), &[&global, &france]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("AzureDigitalTwins.FranceCentral"), "{}", w[0]);
        // Every account is warned about, naming its region.
        let w = STORAGE.resource_warnings(&live("westeurope"), &[&global, &france]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("in westeurope"), "{}", w[0]);
        assert!(!w[0].contains("FranceCentral"), "{}", w[0]);
    }
}
