//! Event Grid topics and domains: `properties.inboundIpRules` on the
//! resource itself, honoured while `properties.publicNetworkAccess` is
//! Enabled. 128 rules; IPv4 only; a single address written bare.
//!
//! One GET reads both the facts and the rules. The write is a PATCH of
//! `{"properties": {"inboundIpRules": [...]}}` (top-level properties merge,
//! so nothing else is sent), long-running: `201` with a body and an
//! `Azure-AsyncOperation` URL (with an explicit `:443` in the recording), or
//! `200` with no body; the client polls, then the pipeline reads back. Never
//! a PUT, which would replace the resource. An empty list with public access
//! Enabled opens the resource to every address, as on a namespace.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    Adapter, Field, LiveState, ResourceFacts, TargetSpec, edit_rules, read_rules, require,
};
use crate::azure::arm::{ArmError, Transport};
use crate::plan::{Capabilities, LiveRules};
use crate::prefix::PrefixSet;

pub const API_VERSION: &str = "2025-02-15";

/// A kind of Event Grid resource (topics, domains): the same API.
pub struct EventGridAdapter {
    pub name: &'static str,
    pub provider: &'static str,
    pub read_action: &'static str,
    pub write_action: &'static str,
}

pub const TOPICS: EventGridAdapter = EventGridAdapter {
    name: "event-grid-topic",
    provider: "Microsoft.EventGrid/topics",
    read_action: "Microsoft.EventGrid/topics/read",
    write_action: "Microsoft.EventGrid/topics/write",
};

pub const DOMAINS: EventGridAdapter = EventGridAdapter {
    name: "event-grid-domain",
    provider: "Microsoft.EventGrid/domains",
    read_action: "Microsoft.EventGrid/domains/read",
    write_action: "Microsoft.EventGrid/domains/write",
};

fn state_from(resource: &Value) -> Result<LiveState, ArmError> {
    let what = "Event Grid resource's properties";
    let props = resource
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| {
            ArmError::Invalid("the Event Grid resource has no `properties` object".into())
        })?;
    let rules = require(props, what, "inboundIpRules", Field::Array)?;
    let access = require(props, what, "publicNetworkAccess", Field::String)?;
    let (ip, other_ip_rules) = read_rules(rules, "ipMask");
    // The fingerprint covers what tagsync reads and writes, not the
    // provisioning state, which changes while an update runs.
    let raw = json!({"publicNetworkAccess": access, "inboundIpRules": rules});
    let disabled = access
        .as_str()
        .is_some_and(|a| a.eq_ignore_ascii_case("Disabled"));
    Ok(LiveState {
        facts: ResourceFacts {
            sku: resource["sku"]["name"].as_str().map(str::to_owned),
            location: resource["location"].as_str().map(str::to_owned),
            unsupported: None,
            ipv6_endpoints: None,
        },
        rules: LiveRules {
            ip,
            vnet_rules: 0,
            other_ip_rules,
            public_access_disabled: disabled,
            default_deny: false,
        },
        default_action: None,
        public_network_access: Some(if disabled { "Disabled" } else { "Enabled" }.into()),
        trusted_service_access: None,
        fingerprint: LiveState::fingerprint_of(&raw),
        raw,
    })
}

#[async_trait]
impl Adapter for EventGridAdapter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn provider(&self) -> &'static str {
        self.provider
    }

    fn accepts_ipv6(&self) -> bool {
        false
    }

    fn capabilities(&self, target: &TargetSpec) -> Capabilities {
        Capabilities {
            budget: target.max_rules.unwrap_or(128),
            vnet_rules_share_budget: false,
            empty_means_open: true,
            empty_locks_out: false,
            ipv6: false,
            split_31: false,
        }
    }

    async fn read(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        _known: Option<&ResourceFacts>,
    ) -> Result<LiveState, ArmError> {
        let resource = arm
            .get(&target.resource.id, API_VERSION, self.read_action)
            .await?;
        state_from(&resource)
    }

    fn rule_objects(&self, rules: &PrefixSet) -> Value {
        json!({ "inboundIpRules": edit_rules(&[], "ipMask", Some("Allow"), rules, &PrefixSet::new()) })
    }

    async fn write(
        &self,
        arm: &dyn Transport,
        target: &TargetSpec,
        live: &LiveState,
        add: &PrefixSet,
        remove: &PrefixSet,
    ) -> Result<Option<LiveState>, ArmError> {
        let rules = live.raw["inboundIpRules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let body = json!({"properties": {
            "inboundIpRules": edit_rules(&rules, "ipMask", Some("Allow"), add, remove)
        }});
        let answer = arm
            .patch(&target.resource.id, API_VERSION, &body, self.write_action)
            .await?;
        // 200 with no body is a complete answer too: the read-back counts.
        Ok(state_from(&answer).ok())
    }
}
