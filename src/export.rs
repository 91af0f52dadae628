//! Export: the rule set `sync` would write to each target, for teams whose
//! Terraform or Bicep (or any pipeline) owns the firewall instead.
//!
//! Computed by the same run path as `plan`: the same fit, normalization and
//! guards. `rules` is what tagsync wants on the target (its desired rules,
//! and owned ones inside their removal grace period), `foreign` the other
//! live rules it found; together they are exactly the rule set `sync`
//! writes, in the kind's own rule form (a Storage single address bare).

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use crate::config::Settings;
use crate::reconcile::{Outcome, TargetReport};
use crate::targets::render_rule;

/// One target's export.
#[derive(Debug, Clone, Serialize)]
pub struct TargetExport {
    pub target: String,
    pub kind: String,
    pub resource_id: String,
    /// The feed's changeNumber the rules come from.
    pub change_number: Option<u64>,
    /// `planned`, or why there is nothing to export: `refused`, `failed`.
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The rules tagsync wants on the target, as the kind stores them.
    pub rules: Vec<String>,
    /// The live rules tagsync does not manage, kept as they are.
    pub foreign: Vec<String>,
    /// `rules` as the resource's own rule objects (`ipRules`, ...).
    #[serde(skip)]
    pub objects: Value,
}

impl TargetExport {
    pub fn new(report: &TargetReport, settings: &Settings, change_number: Option<u64>) -> Self {
        let mut out = Self {
            target: report.name.clone(),
            kind: report.kind.clone(),
            resource_id: report.resource_id.clone(),
            change_number,
            outcome: report.outcome,
            error: report.error.clone(),
            rules: Vec::new(),
            foreign: Vec::new(),
            objects: Value::Null,
        };
        if let (Some(plan), true) = (&report.plan, out.exported()) {
            let others = plan.foreign.difference(&plan.desired_foreign);
            let wanted = plan.result.difference(&others);
            out.rules = wanted.iter().map(|n| render_rule(&n)).collect();
            out.foreign = others.iter().map(|n| render_rule(&n)).collect();
            if let Some(t) = settings.targets.iter().find(|t| t.name == report.name) {
                out.objects = t.adapter.rule_objects(&wanted);
            }
        }
        out
    }

    /// Export runs as a plan: its targets end planned, refused or failed,
    /// and only a planned one has rules to export.
    fn exported(&self) -> bool {
        self.outcome == Outcome::Planned
    }
}

/// One comment line per target with nothing to export, saying why.
fn not_exported(exports: &[TargetExport], comment: &str, out: &mut String) {
    for e in exports.iter().filter(|e| !e.exported()) {
        let _ = writeln!(
            out,
            "{comment} {} not exported ({}): {}",
            e.target,
            e.outcome.as_str(),
            e.error.as_deref().unwrap_or("no plan").replace('\n', " ")
        );
    }
}

/// A string as an HCL or JSON string literal (the escapes agree for what
/// rule values, names and resource ids hold).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A `.tfvars` file: one variable, `tagsync_ip_rules`, a map from target
/// name to its export. Targets with nothing to export are comments, so a
/// pipeline that reads one fails on the missing key instead of emptying a
/// firewall.
pub fn terraform(exports: &[TargetExport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `tagsync export`: the rules `tagsync sync` would write.\n# variable \"tagsync_ip_rules\" {{\n#   type = map(object({{ resource_id = string, kind = string, change_number = number, rules = list(string), foreign = list(string) }}))\n# }}"
    );
    not_exported(exports, "#", &mut out);
    out.push_str("tagsync_ip_rules = {\n");
    for e in exports.iter().filter(|e| e.exported()) {
        let list = |items: &[String]| {
            if items.is_empty() {
                return "[]".to_owned();
            }
            let mut l = String::from("[\n");
            for i in items {
                let _ = writeln!(l, "      {},", quoted(i));
            }
            l.push_str("    ]");
            l
        };
        let _ = writeln!(out, "  {} = {{", quoted(&e.target));
        let _ = writeln!(out, "    resource_id   = {}", quoted(&e.resource_id));
        let _ = writeln!(out, "    kind          = {}", quoted(&e.kind));
        let _ = writeln!(
            out,
            "    change_number = {}",
            e.change_number.map_or("null".to_owned(), |c| c.to_string())
        );
        let _ = writeln!(out, "    rules         = {}", list(&e.rules));
        let _ = writeln!(out, "    foreign       = {}", list(&e.foreign));
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// A Bicep string literal: single quotes, `\` and `'` escaped, and `${`
/// kept from starting an interpolation.
fn bicep_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn bicep_key(k: &str) -> String {
    let ident = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ident { k.to_owned() } else { bicep_string(k) }
}

/// A JSON value in Bicep's syntax (objects and arrays one item a line).
fn bicep_value(v: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&bicep_string(s)),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for i in items {
                out.push_str(&pad);
                bicep_value(i, indent + 1, out);
                out.push('\n');
            }
            out.push_str(&end);
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push_str("{\n");
            for (k, v) in map {
                let _ = write!(out, "{pad}{}: ", bicep_key(k));
                bicep_value(v, indent + 1, out);
                out.push('\n');
            }
            out.push_str(&end);
            out.push('}');
        }
    }
}

/// A `.bicepparam` file for `template`: one parameter, `tagsyncIpRules`,
/// an object from target name to its export; `properties` holds the rules
/// as the resource's own property (`ipRules`, `inboundIpRules`, ...).
pub fn bicep(exports: &[TargetExport], template: &str) -> String {
    let mut out = String::new();
    out.push_str("// Written by `tagsync export`: the rules `tagsync sync` would write.\n");
    not_exported(exports, "//", &mut out);
    let _ = writeln!(out, "using {}\n", bicep_string(template));
    let mut all = serde_json::Map::new();
    for e in exports.iter().filter(|e| e.exported()) {
        all.insert(
            e.target.clone(),
            serde_json::json!({
                "resourceId": e.resource_id,
                "kind": e.kind,
                "changeNumber": e.change_number,
                "rules": e.rules,
                "foreign": e.foreign,
                "properties": e.objects,
            }),
        );
    }
    out.push_str("param tagsyncIpRules = ");
    bicep_value(&Value::Object(all), 0, &mut out);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicep_strings_cannot_interpolate_or_end_early() {
        assert_eq!(bicep_string("a'b${c}\\"), "'a\\'b\\${c}\\\\'");
        assert_eq!(bicep_key("eh-1"), "'eh-1'");
        assert_eq!(bicep_key("eh_1"), "eh_1");
    }
}
