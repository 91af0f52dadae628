//! Event Hubs namespaces: `Microsoft.EventHub/namespaces/{ns}/networkRuleSets/default`.
//! 128 IP rules (virtual network rules have their own 128); IPv4, and IPv6
//! with `ipv6 = true` (docs since 2025-07) on a namespace with IPv6
//! endpoints (`properties.ipV6Enabled`, API 2026-01-01); not on the Basic
//! tier.

use super::network_rule_set::NamespaceAdapter;

pub const EVENT_HUBS: NamespaceAdapter = NamespaceAdapter {
    name: "event-hubs",
    provider: "Microsoft.EventHub/namespaces",
    accepts_ipv6: true,
    product: "Event Hubs",
    read_namespace: "Microsoft.EventHub/namespaces/read",
    read_rules: "Microsoft.EventHub/namespaces/networkrulesets/read",
    write_rules: "Microsoft.EventHub/namespaces/networkrulesets/write",
    vnet_rules_share_budget: false,
    basic_upgrade: "Standard or above",
    ipv6_api_version: Some("2026-01-01"),
};
