//! Key Vaults: `properties.networkAcls` (FACTS 10). GET, then PATCH of
//! `{"properties": {"networkAcls": {...}}}` with the whole `networkAcls` as
//! read (how the service merges inside it is not documented), synchronous.
//! Never a PUT (it needs the access policies) and never the soft-delete or
//! purge-protection fields, which are irreversible.
//!
//! Rules are `{"value": "1.2.3.0/24"}` (no action); IPv4 only; up to 1,000;
//! a bare address comes back as `/32` (prefixes are compared canonically).
//! A vault whose GET has no `networkAcls` is open (Allow): that is a real
//! state, not an incomplete read, so the rules are written with
//! `defaultAction: Allow` as Azure reports it, and the plan warns that they
//! are not enforced. An empty list under `Deny` closes the vault rather
//! than opening it, which is an outage too: emptying an owned set there is
//! refused unless forced.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    Adapter, Field, LiveState, ResourceFacts, TargetSpec, edit_rules, read_rules, require,
};
use crate::azure::arm::{ArmError, Transport};
use crate::plan::{Capabilities, LiveRules};
use crate::prefix::PrefixSet;

pub const API_VERSION: &str = "2026-02-01";
const ACTION_READ: &str = "Microsoft.KeyVault/vaults/read";
const ACTION_WRITE: &str = "Microsoft.KeyVault/vaults/write";

pub struct KeyVault;

pub const KEY_VAULT: KeyVault = KeyVault;

fn state_from(vault: &Value) -> Result<LiveState, ArmError> {
    let props = vault
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| ArmError::Invalid("the key vault has no `properties` object".into()))?;
    let acls = match props.get("networkAcls") {
        // An open vault: Azure omits the object.
        None | Some(Value::Null) => {
            json!({"defaultAction": "Allow", "ipRules": [], "virtualNetworkRules": []})
        }
        Some(a) if a.is_object() => a.clone(),
        Some(_) => {
            return Err(ArmError::Invalid(
                "the key vault's `networkAcls` is not an object; nothing was written".into(),
            ));
        }
    };
    let what = "key vault's networkAcls";
    let (ip, other_ip_rules) = read_rules(require(&acls, what, "ipRules", Field::Array)?, "value");
    let vnet_rules = require(&acls, what, "virtualNetworkRules", Field::Array)?
        .as_array()
        .map_or(0, Vec::len);
    let default_action = require(&acls, what, "defaultAction", Field::String)?
        .as_str()
        .map(str::to_owned);
    let access = props["publicNetworkAccess"].as_str().map(str::to_owned);
    Ok(LiveState {
        facts: ResourceFacts {
            sku: props["sku"]["name"].as_str().map(str::to_owned),
            location: vault["location"].as_str().map(str::to_owned),
            unsupported: None,
            ipv6_endpoints: None,
        },
        rules: LiveRules {
            ip,
            vnet_rules,
            other_ip_rules,
            public_access_disabled: access.as_deref() == Some("Disabled"),
            default_deny: default_action.as_deref() == Some("Deny"),
        },
        default_action,
        public_network_access: access,
        trusted_service_access: acls["bypass"].as_str().map(|b| b.contains("AzureServices")),
        fingerprint: LiveState::fingerprint_of(&acls),
        raw: acls,
    })
}

#[async_trait]
impl Adapter for KeyVault {
    fn name(&self) -> &'static str {
        "key-vault"
    }

    fn provider(&self) -> &'static str {
        "Microsoft.KeyVault/vaults"
    }

    fn accepts_ipv6(&self) -> bool {
        false
    }

    fn capabilities(&self, target: &TargetSpec) -> Capabilities {
        Capabilities {
            budget: target.max_rules.unwrap_or(1000),
            vnet_rules_share_budget: false,
            empty_means_open: false,
            empty_locks_out: true,
            ipv6: false,
            split_31: false,
        }
    }

    /// One GET: the vault holds its facts and its rules.
    async fn read(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        _known: Option<&ResourceFacts>,
    ) -> Result<LiveState, ArmError> {
        let vault = arm
            .get(&target.resource.id, API_VERSION, ACTION_READ)
            .await?;
        state_from(&vault)
    }

    fn rule_objects(&self, rules: &PrefixSet) -> Value {
        serde_json::json!({ "ipRules": edit_rules(&[], "value", None, rules, &PrefixSet::new()) })
    }

    async fn write(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        live: &LiveState,
        add: &PrefixSet,
        remove: &PrefixSet,
    ) -> Result<Option<LiveState>, ArmError> {
        let mut acls = live.raw.clone();
        let rules = acls["ipRules"].as_array().cloned().unwrap_or_default();
        acls["ipRules"] = Value::Array(edit_rules(&rules, "value", None, add, remove));
        let body = json!({ "properties": { "networkAcls": acls } });
        let answer = arm
            .patch(&target.resource.id, API_VERSION, &body, ACTION_WRITE)
            .await?;
        Ok(state_from(&answer).ok())
    }
}
