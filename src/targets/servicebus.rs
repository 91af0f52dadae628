//! Service Bus namespaces: `Microsoft.ServiceBus/namespaces/{ns}/networkRuleSets/default`.
//! 128 IP and virtual network rules combined; IPv4 only (the configuration
//! refuses `ipv6 = true`); not on the Basic tier.

use super::network_rule_set::NamespaceAdapter;

pub const SERVICE_BUS: NamespaceAdapter = NamespaceAdapter {
    name: "service-bus",
    provider: "Microsoft.ServiceBus/namespaces",
    accepts_ipv6: false,
    product: "Service Bus",
    read_namespace: "Microsoft.ServiceBus/namespaces/read",
    read_rules: "Microsoft.ServiceBus/namespaces/networkrulesets/read",
    write_rules: "Microsoft.ServiceBus/namespaces/networkrulesets/write",
    vnet_rules_share_budget: true,
    basic_upgrade: "Standard or Premium",
    ipv6_api_version: None,
};
