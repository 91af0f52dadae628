//! `networkRuleSets/default` of Event Hubs and Service Bus namespaces: the
//! same body for both. GET, then PUT of the whole object (PUT replaces
//! everything), with every field but `ipRules` sent back exactly as read.

use async_trait::async_trait;
use serde_json::Value;

use super::{Adapter, Field, LiveState, ResourceFacts, TargetSpec, read_rules, require};
use crate::azure::arm::{ArmError, Transport};
use crate::plan::{Capabilities, LiveRules};
use crate::prefix::PrefixSet;
use crate::tags::TagState;

/// An Event Hubs or Service Bus namespace: the same API, different limits
/// and permissions (see `eventhubs.rs` and `servicebus.rs`).
pub struct NamespaceAdapter {
    pub name: &'static str,
    pub provider: &'static str,
    pub accepts_ipv6: bool,
    /// The product name used in messages.
    pub product: &'static str,
    pub read_namespace: &'static str,
    pub read_rules: &'static str,
    pub write_rules: &'static str,
    /// Whether virtual network rules count against the IP rule budget.
    pub vnet_rules_share_budget: bool,
    /// What to do about a Basic namespace, which cannot hold IP rules.
    pub basic_upgrade: &'static str,
    /// The API version whose namespace carries `properties.ipV6Enabled`
    /// (Event Hubs 2026-01-01), read when a target takes IPv6 rules.
    pub ipv6_api_version: Option<&'static str>,
}

#[async_trait]
impl Adapter for NamespaceAdapter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn provider(&self) -> &'static str {
        self.provider
    }

    fn accepts_ipv6(&self) -> bool {
        self.accepts_ipv6
    }

    fn resource_warnings(&self, live: &LiveState, _tags: &[&TagState]) -> Vec<String> {
        if live.trusted_service_access == Some(true) {
            vec!["trusted Microsoft services access is enabled: Azure Digital Twins with a system-assigned identity may not need IP rules".into()]
        } else {
            Vec::new()
        }
    }

    fn capabilities(&self, target: &TargetSpec) -> Capabilities {
        Capabilities {
            budget: target.max_rules.unwrap_or(128),
            vnet_rules_share_budget: self.vnet_rules_share_budget,
            empty_means_open: true,
            empty_locks_out: false,
            ipv6: target.ipv6,
            split_31: false,
        }
    }

    /// Two GETs: the namespace (tier, location), unless known, then its rule
    /// set; a Basic namespace is not asked for rules it cannot hold.
    async fn read(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        known: Option<&ResourceFacts>,
    ) -> Result<LiveState, ArmError> {
        if let Some(facts) = known {
            let body = arm.get(&path(target), API_VERSION, self.read_rules).await?;
            return state_from(&body, facts.clone());
        }
        let ipv6_api = self.ipv6_api_version.filter(|_| target.ipv6);
        let ns = arm
            .get(
                &target.resource.id,
                ipv6_api.unwrap_or(API_VERSION),
                self.read_namespace,
            )
            .await?;
        let mut facts = ResourceFacts {
            sku: ns["sku"]["name"].as_str().map(str::to_owned),
            location: ns["location"].as_str().map(str::to_owned),
            unsupported: None,
            ipv6_endpoints: ipv6_api
                .map(|_| ns["properties"]["ipV6Enabled"].as_bool() == Some(true)),
        };
        if facts
            .sku
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Basic"))
        {
            facts.unsupported = Some(format!(
                "{} Basic namespaces cannot hold IP rules; upgrade the namespace to {}",
                self.product, self.basic_upgrade
            ));
            return Ok(LiveState::unsupported(facts));
        }
        let body = arm.get(&path(target), API_VERSION, self.read_rules).await?;
        state_from(&body, facts)
    }

    fn rule_objects(&self, rules: &PrefixSet) -> Value {
        serde_json::json!({
            "ipRules": super::edit_rules(&[], "ipMask", Some("Allow"), rules, &PrefixSet::new())
        })
    }

    async fn write(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        live: &LiveState,
        add: &PrefixSet,
        remove: &PrefixSet,
    ) -> Result<Option<LiveState>, ArmError> {
        let mut props = live.raw.clone();
        let rules = props["ipRules"].as_array().cloned().unwrap_or_default();
        props["ipRules"] = Value::Array(super::edit_rules(
            &rules,
            "ipMask",
            Some("Allow"),
            add,
            remove,
        ));
        let body = serde_json::json!({ "properties": props });
        let answer = arm
            .put(&path(target), API_VERSION, &body, self.write_rules)
            .await?;
        Ok(state_from(&answer, live.facts.clone()).ok())
    }
}

pub const API_VERSION: &str = "2024-01-01";

fn path(target: &TargetSpec) -> String {
    format!("{}/networkRuleSets/default", target.resource.id)
}

fn state_from(body: &Value, facts: ResourceFacts) -> Result<LiveState, ArmError> {
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| {
            ArmError::Invalid("the network rule set has no `properties` object".into())
        })?;
    let what = "network rule set";
    let (ip, other_ip_rules) = read_rules(require(props, what, "ipRules", Field::Array)?, "ipMask");
    let vnet_rules = require(props, what, "virtualNetworkRules", Field::Array)?
        .as_array()
        .map_or(0, Vec::len);
    let default_action = require(props, what, "defaultAction", Field::String)?;
    let public_network_access = require(props, what, "publicNetworkAccess", Field::String)?;
    Ok(LiveState {
        facts,
        rules: LiveRules {
            ip,
            vnet_rules,
            other_ip_rules,
            public_access_disabled: public_network_access.as_str() == Some("Disabled"),
            default_deny: default_action.as_str() == Some("Deny"),
        },
        default_action: default_action.as_str().map(str::to_owned),
        public_network_access: public_network_access.as_str().map(str::to_owned),
        trusted_service_access: props["trustedServiceAccessEnabled"].as_bool(),
        fingerprint: LiveState::fingerprint_of(props),
        raw: props.clone(),
    })
}
