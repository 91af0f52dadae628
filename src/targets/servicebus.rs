//! Service Bus namespaces: `Microsoft.ServiceBus/namespaces/{ns}/networkRuleSets/default`.
//! 128 IP and virtual network rules combined; IPv4 only; not on Basic.

use async_trait::async_trait;

use super::{Adapter, LiveState, ResourceFacts, TargetKind, TargetSpec, network_rule_set};
use crate::azure::arm::{ArmClient, ArmError};
use crate::plan::Capabilities;
use crate::prefix::PrefixSet;

pub struct ServiceBus;

#[async_trait]
impl Adapter for ServiceBus {
    fn kind(&self) -> TargetKind {
        TargetKind::ServiceBus
    }

    fn read_action(&self) -> &'static str {
        "Microsoft.ServiceBus/namespaces/networkrulesets/read"
    }

    fn write_action(&self) -> &'static str {
        "Microsoft.ServiceBus/namespaces/networkrulesets/write"
    }

    fn capabilities(&self, target: &TargetSpec) -> Capabilities {
        Capabilities {
            budget: target.max_rules.unwrap_or(128),
            vnet_rules_share_budget: true,
            empty_means_open: true,
            ipv6: target.ipv6,
            split_31: false,
        }
    }

    async fn facts(&self, arm: &ArmClient, target: &TargetSpec) -> Result<ResourceFacts, ArmError> {
        let mut facts =
            network_rule_set::namespace_facts(arm, target, "Microsoft.ServiceBus/namespaces/read")
                .await?;
        if facts
            .sku
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Basic"))
        {
            facts.unsupported = Some(
                "Service Bus Basic namespaces cannot hold IP rules; upgrade the namespace to Standard or Premium".into(),
            );
        }
        Ok(facts)
    }

    async fn read(&self, arm: &ArmClient, target: &TargetSpec) -> Result<LiveState, ArmError> {
        network_rule_set::read(arm, target, self.read_action()).await
    }

    async fn write(
        &self,
        arm: &ArmClient,
        target: &TargetSpec,
        live: &LiveState,
        add: &PrefixSet,
        remove: &PrefixSet,
    ) -> Result<LiveState, ArmError> {
        network_rule_set::write(arm, target, live, add, remove, self.write_action()).await
    }
}
