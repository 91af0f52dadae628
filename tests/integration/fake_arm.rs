//! A stateful fake of Azure Resource Manager on 127.0.0.1, shaped after the
//! azure-cli recordings and the REST specs (shared/azure): network rule
//! sets answer with `location`, the plural `type` and subnet ids re-cased
//! (`resourcegroups`); PUT replaces the whole rule set and answers 200;
//! storage PATCH replaces the whole `networkAcls` (an omitted list comes back
//! empty). It validates like Azure does (bad CIDR, /31 and /32 and private
//! ranges on Storage, duplicates, too many rules, zero rules with Deny) and
//! can be told to fail the next calls (429 + Retry-After, 500, 429 with
//! SubCode 40901 "another conflicting operation", as Service Bus sends it).
//!
//! The same server is the managed identity token endpoint (App Service
//! style: `IDENTITY_ENDPOINT` + `X-IDENTITY-HEADER`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::fake_http::{FakeServer, Request, Response};

pub const SUB: &str = "00000000-0000-0000-0000-000000000000";
pub const RG: &str = "rg-adt";
pub const TOKEN: &str = "fake-arm-token-5f2a";
/// The managed identity's token for Event Grid (`https://eventgrid.azure.net`).
pub const EVENT_GRID_TOKEN: &str = "fake-eventgrid-token-77d1";
pub const IDENTITY_HEADER: &str = "identity-header-secret-9c1e";

#[derive(Default)]
pub struct State {
    /// Lower-cased resource id -> resource JSON.
    pub resources: HashMap<String, Value>,
    /// Lower-cased rule set path -> network rule set JSON (EH, SB).
    pub rule_sets: HashMap<String, Value>,
    /// Scripted answers, taken first: (path substring, method, response).
    pub faults: VecDeque<(String, String, Response)>,
    pub writes: Vec<String>,
    /// Every authorized Resource Manager request: `METHOD /lower/cased/path`.
    pub requests: Vec<String>,
    pub token_requests: usize,
    /// Pages of the Service Tag Discovery API answer; `{next}` in a page's
    /// nextLink is replaced by the URL of the following page.
    pub service_tag_pages: Vec<Value>,
    /// Answer writes with 202 + Azure-AsyncOperation (polled: InProgress,
    /// then Succeeded), as long-running ARM operations do.
    pub async_writes: bool,
    pub operation_polls: usize,
    /// `Retry-After` of the 202 and of each poll (default "0").
    pub operation_retry_after: Option<String>,
    /// Someone else's edit: after the n-th GET of a rule set path, its
    /// properties become this (the GET itself still answers the old state).
    pub edit_after_get: Option<(String, usize, Value)>,
    pub rule_set_gets: HashMap<String, usize>,
    /// A prefix Azure silently leaves out of the next written rule set.
    pub drop_on_write: Option<String>,
    /// Answers lost after the request took effect: (path substring, method,
    /// what the client gets instead). Azure applied it; the client never
    /// learns.
    pub lost_answers: VecDeque<(String, String, Response)>,
    /// Event Grid updates answer `200` with no body instead of `201` + an
    /// operation to poll (both are real answers).
    pub event_grid_empty_200: bool,
    /// The body of the last Key Vault PATCH, as sent.
    pub last_vault_patch: Option<Value>,
    /// Every Resource Manager answer is sent this late (kills land mid-run).
    pub delay: Option<std::time::Duration>,
    /// Resource Manager's throttling: a token bucket for reads and one for
    /// writes; a request finding its bucket empty is answered 429 with
    /// `Retry-After`, and every answer says what is left.
    pub throttle: Option<Throttle>,
    /// Requests answered 429 by the throttle.
    pub throttled: usize,
}

/// Resource Manager's two token buckets for one principal (FACTS.md 6).
pub struct Throttle {
    pub reads: Bucket,
    pub writes: Bucket,
}

pub struct Bucket {
    pub capacity: f64,
    pub per_second: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    pub fn new(capacity: u32, per_second: f64) -> Self {
        Self {
            capacity: f64::from(capacity),
            per_second,
            tokens: f64::from(capacity),
            at: std::time::Instant::now(),
        }
    }

    /// Takes a token: Ok(what is left) or Err(seconds until one is back).
    fn take(&mut self) -> Result<u64, u64> {
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_second).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.tokens as u64)
        } else {
            Err(((1.0 - self.tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

impl Throttle {
    /// Resource Manager's documented sizes: 250 reads at 25/s, 200 writes
    /// at 10/s.
    #[allow(dead_code)] // the scale benchmark's model (examples/scale.rs)
    pub fn azure() -> Self {
        Self {
            reads: Bucket::new(250, 25.0),
            writes: Bucket::new(200, 10.0),
        }
    }
}

pub struct FakeArm {
    pub server: FakeServer,
    pub state: Arc<Mutex<State>>,
}

pub fn namespace_id(provider: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/{provider}/namespaces/{name}")
}

pub fn storage_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/{name}"
    )
}

pub fn event_grid_id(kind: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.EventGrid/{kind}/{name}")
}

pub fn vault_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{name}")
}

pub fn subnet_id(vnet: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/default"
    )
}

impl FakeArm {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let server = FakeServer::start(move |req| handle(&s, req));
        Self { server, state }
    }

    pub fn base(&self) -> String {
        self.server.base()
    }

    /// An Event Hubs or Service Bus namespace with a rule set.
    pub fn add_namespace(&self, provider: &str, name: &str, sku: &str, properties: Value) {
        let id = namespace_id(provider, name);
        let mut st = self.state.lock().expect("lock");
        st.resources.insert(
            id.to_lowercase(),
            json!({"id": id, "name": name, "type": provider, "location": "West Europe",
                   "sku": {"name": sku, "tier": sku}, "properties": {"status": "Active"}}),
        );
        st.rule_sets.insert(
            format!("{id}/networkRuleSets/default").to_lowercase(),
            json!({"id": format!("{id}/networkRuleSets/default"), "name": "default",
                   "type": format!("{provider}/NetworkRuleSets"), "location": "West Europe",
                   "properties": properties}),
        );
    }

    pub fn add_storage(&self, name: &str, location: &str, network_acls: Value) {
        let id = storage_id(name);
        self.state.lock().expect("lock").resources.insert(
            id.to_lowercase(),
            json!({"sku": {"name": "Standard_RAGRS", "tier": "Standard"}, "kind": "StorageV2", "id": id,
                   "name": name, "type": "Microsoft.Storage/storageAccounts", "location": location, "tags": {},
                   "properties": {"minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": false,
                                  "networkAcls": network_acls, "supportsHttpsTrafficOnly": true,
                                  "provisioningState": "Succeeded"}}),
        );
    }

    /// An Event Grid topic or domain (`kind` = "topics" | "domains"), shaped
    /// like the recording's GET.
    pub fn add_event_grid(&self, kind: &str, name: &str, public_access: &str, rules: Value) {
        let id = event_grid_id(kind, name);
        self.state.lock().expect("lock").resources.insert(
            id.to_lowercase(),
            json!({"properties": {"provisioningState": "Succeeded",
                   "endpoint": format!("https://{name}.westeurope-1.eventgrid.azure.net/api/events"),
                   "inputSchema": "EventGridSchema", "publicNetworkAccess": public_access,
                   "inboundIpRules": rules},
                   "sku": {"name": "Basic"}, "kind": "Azure", "location": "westeurope", "tags": null,
                   "id": id, "name": name, "type": format!("Microsoft.EventGrid/{kind}")}),
        );
    }

    /// A key vault, shaped like the recording's GET; `network_acls` None is
    /// an open vault whose GET omits the object.
    pub fn add_vault(&self, name: &str, network_acls: Option<Value>) {
        let id = vault_id(name);
        let mut props = json!({"sku": {"family": "A", "name": "premium"},
            "tenantId": "54826b22-38d6-4fb2-bad9-b7b93a3e9c5a", "accessPolicies": [],
            "enabledForDeployment": false, "enableSoftDelete": true, "softDeleteRetentionInDays": 7,
            "enableRbacAuthorization": true, "vaultUri": format!("https://{name}.vault.azure.net/"),
            "provisioningState": "Succeeded", "publicNetworkAccess": "Enabled"});
        if let Some(acls) = network_acls {
            props["networkAcls"] = acls;
        }
        self.state.lock().expect("lock").resources.insert(
            id.to_lowercase(),
            json!({"id": id, "name": name, "type": "Microsoft.KeyVault/vaults", "location": "westeurope",
                   "tags": {}, "properties": props}),
        );
    }

    pub fn resource(&self, id: &str) -> Value {
        self.state.lock().expect("lock").resources[&id.to_lowercase()].clone()
    }

    pub fn rule_set(&self, provider: &str, name: &str) -> Value {
        let id = namespace_id(provider, name);
        self.state.lock().expect("lock").rule_sets
            [&format!("{id}/networkRuleSets/default").to_lowercase()]["properties"]
            .clone()
    }

    pub fn set_rule_set(&self, provider: &str, name: &str, properties: Value) {
        let id = namespace_id(provider, name);
        self.state
            .lock()
            .expect("lock")
            .rule_sets
            .get_mut(&format!("{id}/networkRuleSets/default").to_lowercase())
            .expect("rule set")["properties"] = properties;
    }

    pub fn storage_acls(&self, name: &str) -> Value {
        self.state.lock().expect("lock").resources[&storage_id(name).to_lowercase()]["properties"]["networkAcls"].clone()
    }

    pub fn fail(&self, path_part: &str, method: &str, resp: Response) {
        self.state.lock().expect("lock").faults.push_back((
            path_part.to_lowercase(),
            method.to_owned(),
            resp,
        ));
    }

    /// The next `n` answers to `method` on a path containing `path_part` are
    /// lost after the request took effect: the client gets `instead`.
    pub fn lose_answers(&self, path_part: &str, method: &str, n: usize, instead: Response) {
        let mut st = self.state.lock().expect("lock");
        for _ in 0..n {
            st.lost_answers
                .push_back((path_part.to_lowercase(), method.into(), instead.clone()));
        }
    }

    /// Takes the requests made so far (and forgets them).
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().expect("lock").requests)
    }

    pub fn writes(&self) -> Vec<String> {
        self.state.lock().expect("lock").writes.clone()
    }

    /// Environment for managed identity through this server.
    pub fn identity_env(&self) -> Vec<(String, String)> {
        vec![
            ("IDENTITY_ENDPOINT".into(), self.server.url("/msi/token")),
            ("IDENTITY_HEADER".into(), IDENTITY_HEADER.into()),
        ]
    }
}

fn arm_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

fn handle(state: &Mutex<State>, req: &Request) -> Response {
    let path = req.path_only().to_lowercase();
    if path == "/msi/token" {
        // The identity endpoint can be told to fail too.
        let mut st = state.lock().expect("lock");
        let fault = st
            .faults
            .iter()
            .position(|(p, m, _)| p == "/msi/token" && (m == &req.method || m == "*"));
        if let Some((_, _, resp)) = fault.and_then(|i| st.faults.remove(i)) {
            return resp;
        }
        drop(st);
        return respond(state, req);
    }
    let answer = respond(state, req);
    let mut st = state.lock().expect("lock");
    let lost = st
        .lost_answers
        .iter()
        .position(|(p, m, _)| path.contains(p.as_str()) && (m == &req.method || m == "*"));
    let answer = match lost.and_then(|i| st.lost_answers.remove(i)) {
        Some((_, _, instead)) => instead,
        None => answer,
    };
    match st.delay {
        Some(d) => answer.delayed(d),
        None => answer,
    }
}

fn respond(state: &Mutex<State>, req: &Request) -> Response {
    let path = req.path_only().to_lowercase();
    if path == "/msi/token" {
        if req.header("x-identity-header") != Some(IDENTITY_HEADER) {
            return Response::json(
                400,
                r#"{"error":"invalid_request","error_description":"missing header"}"#,
            );
        }
        state.lock().expect("lock").token_requests += 1;
        // A token is for one resource: Event Grid's is not Resource Manager's.
        let for_event_grid = req.path.contains("eventgrid.azure.net");
        let (token, resource) = if for_event_grid {
            (EVENT_GRID_TOKEN, "https://eventgrid.azure.net")
        } else {
            (TOKEN, "https://management.azure.com")
        };
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 3600)
            .unwrap_or_default();
        return Response::json(
            200,
            json!({"access_token": token, "expires_on": expires.to_string(), "resource": resource,
                   "token_type": "Bearer", "client_id": "00000000-0000-0000-0000-00000000c11e"})
            .to_string(),
        );
    }
    if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return arm_error(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    }
    let mut st = state.lock().expect("lock");
    st.requests.push(format!("{} {path}", req.method));
    let reading = req.method == "GET";
    let mut left = None;
    if let Some(t) = st.throttle.as_mut() {
        let bucket = if reading { &mut t.reads } else { &mut t.writes };
        match bucket.take() {
            Ok(n) => left = Some(n),
            Err(wait) => {
                st.throttled += 1;
                return arm_error(
                    429,
                    "TooManyRequests",
                    "The request is being throttled as the limit has been reached for operation type. Please try again after the time in Retry-After.",
                )
                .header("Retry-After", &wait.to_string())
                .header(ratelimit_header(reading), "0");
            }
        }
    }
    drop(st);
    let answer = respond_allowed(state, req, &path);
    match left {
        Some(n) => answer.header(ratelimit_header(reading), &n.to_string()),
        None => answer,
    }
}

fn ratelimit_header(reading: bool) -> &'static str {
    if reading {
        "x-ms-ratelimit-remaining-subscription-reads"
    } else {
        "x-ms-ratelimit-remaining-subscription-writes"
    }
}

/// A request the throttle let through.
fn respond_allowed(state: &Mutex<State>, req: &Request, path: &str) -> Response {
    let path = path.to_owned();
    let mut st = state.lock().expect("lock");
    let fault = st
        .faults
        .iter()
        .position(|(p, m, _)| path.contains(p.as_str()) && (m == &req.method || m == "*"));
    if let Some((_, _, resp)) = fault.and_then(|i| st.faults.remove(i)) {
        return resp;
    }
    if path.contains("/operationsstatus/") {
        // Event Grid's operation: done at the first poll, as recorded.
        return Response::json(200, json!({"status": "Succeeded"}).to_string());
    }
    if path.starts_with("/operations/") {
        st.operation_polls += 1;
        let status = if st.operation_polls % 2 == 1 {
            "InProgress"
        } else {
            "Succeeded"
        };
        let wait = st
            .operation_retry_after
            .clone()
            .unwrap_or_else(|| "0".into());
        return Response::json(200, json!({"status": status}).to_string())
            .header("Retry-After", &wait);
    }
    if path.ends_with("/servicetags") && req.method == "GET" {
        let page: usize = req
            .path
            .split("skipToken=")
            .nth(1)
            .and_then(|t| t.split('&').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let Some(body) = st.service_tag_pages.get(page).cloned() else {
            return arm_error(404, "NotFound", "no such page");
        };
        let mut body = body;
        if page + 1 < st.service_tag_pages.len() {
            body["nextLink"] = Value::String(format!(
                "http://{}{}?api-version=2024-07-01&$skipToken={}",
                req.header("host").unwrap_or_default(),
                req.path_only(),
                page + 1
            ));
        }
        return Response::json(200, body.to_string());
    }
    match req.method.as_str() {
        "GET" => {
            if let Some(rs) = st.rule_sets.get(&path) {
                let answer = Response::json(200, recase_subnets(rs).to_string());
                let n = {
                    let c = st.rule_set_gets.entry(path.clone()).or_insert(0);
                    *c += 1;
                    *c
                };
                if let Some((p, at, props)) = st.edit_after_get.clone()
                    && p == path
                    && at == n
                {
                    st.rule_sets.get_mut(&path).expect("present")["properties"] = props;
                    st.edit_after_get = None;
                }
                return answer;
            }
            match st.resources.get(&path) {
                Some(r) => Response::json(200, r.to_string()),
                None => arm_error(
                    404,
                    "ResourceNotFound",
                    &format!("The Resource '{}' was not found.", req.path_only()),
                ),
            }
        }
        "PUT" if st.rule_sets.contains_key(&path) => {
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => {
                    return arm_error(400, "BadRequest", "The request body is not valid JSON.");
                }
            };
            let props = body["properties"].clone();
            let ip = props["ipRules"].as_array().cloned().unwrap_or_default();
            let vnet = props["virtualNetworkRules"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let servicebus = path.contains("microsoft.servicebus");
            let namespace = path.trim_end_matches("/networkrulesets/default").to_owned();
            if st.resources[&namespace]["sku"]["name"] == "Basic" {
                return arm_error(
                    400,
                    "BadRequest",
                    "Network rule sets are not supported for namespaces in the Basic tier.",
                );
            }
            let mut seen = std::collections::HashSet::new();
            for r in &ip {
                let mask = r["ipMask"].as_str().unwrap_or_default();
                let net = mask
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| mask.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                let Ok(net) = net else {
                    return arm_error(
                        400,
                        "BadRequest",
                        "The provided ip address mask does not follow the CIDR notation.",
                    );
                };
                if servicebus && matches!(net, ipnet::IpNet::V6(_)) {
                    return arm_error(
                        400,
                        "BadRequest",
                        "IPv6 addresses are not supported in Service Bus IP rules.",
                    );
                }
                if r["action"] != "Allow" {
                    return arm_error(
                        400,
                        "BadRequest",
                        "The only supported IP rule action is Allow.",
                    );
                }
                if !seen.insert(net.trunc()) {
                    return arm_error(
                        400,
                        "BadRequest",
                        &format!("The IP rule {mask} is specified more than once."),
                    );
                }
            }
            let count = if servicebus {
                ip.len() + vnet.len()
            } else {
                ip.len()
            };
            // The limit is Azure's (FACTS.md 3, 4); the message text is ours:
            // no recording shows the real one, and tagsync only relies on the
            // 400 and on passing Azure's text through.
            if count > 128 {
                return arm_error(
                    400,
                    "BadRequest",
                    "Exceeded the maximum number of allowed IP rules (128).",
                );
            }
            // An omitted publicNetworkAccess takes the spec default, Enabled
            // (FACTS.md 3): exactly the re-opening tagsync must never cause.
            let mut props = props;
            if props.get("publicNetworkAccess").is_none() {
                props["publicNetworkAccess"] = json!("Enabled");
            }
            if ip.is_empty()
                && vnet.is_empty()
                && props["defaultAction"] == "Deny"
                && props["publicNetworkAccess"] != "Disabled"
            {
                return arm_error(
                    400,
                    "InvalidNetworkRuleSetUpdate",
                    "A network rule set with defaultAction Deny needs at least one IP or virtual network rule.",
                );
            }
            st.writes.push(format!("PUT {}", req.path_only()));
            if let Some(dropped) = st.drop_on_write.take()
                && let Some(rules) = props["ipRules"].as_array_mut()
            {
                rules.retain(|r| r["ipMask"] != dropped.as_str());
            }
            let rs = st.rule_sets.get_mut(&path).expect("checked");
            rs["properties"] = props;
            let answer = recase_subnets(rs).to_string();
            if st.async_writes {
                let op = format!(
                    "http://{}/operations/{}",
                    req.header("host").unwrap_or_default(),
                    st.writes.len()
                );
                let wait = st
                    .operation_retry_after
                    .clone()
                    .unwrap_or_else(|| "0".into());
                return Response::new(202, "")
                    .header("Azure-AsyncOperation", &op)
                    .header("Retry-After", &wait);
            }
            Response::json(200, answer)
        }
        "PATCH"
            if path.contains("microsoft.storage/storageaccounts")
                && st.resources.contains_key(&path) =>
        {
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => {
                    return arm_error(400, "BadRequest", "The request body is not valid JSON.");
                }
            };
            // A PATCH without networkAcls is legal: it changes nothing there.
            let Some(mut acls) = body["properties"].get("networkAcls").cloned() else {
                st.writes.push(format!("PATCH {}", req.path_only()));
                return Response::json(200, st.resources[&path].to_string());
            };
            if !acls.is_object() || acls["defaultAction"].is_null() {
                return arm_error(
                    400,
                    "InvalidRequestPropertyValue",
                    "networkAcls.defaultAction is required.",
                );
            }
            let rules = acls["ipRules"].as_array().cloned().unwrap_or_default();
            let mut seen = std::collections::HashSet::new();
            for r in &rules {
                let v = r["value"].as_str().unwrap_or_default();
                if !storage_value_ok(v) {
                    return arm_error(
                        400,
                        "InvalidValuesForRequestParameters",
                        "Values for request parameters are invalid: networkAcls.ipRule[*].value.",
                    );
                }
                if !seen.insert(v.to_owned()) {
                    return arm_error(
                        400,
                        "InvalidValuesForRequestParameters",
                        "Values for request parameters are invalid: networkAcls.ipRules[*].value(unique).",
                    );
                }
            }
            if rules.len() > 400 {
                return arm_error(
                    400,
                    "InvalidValuesForRequestParameters",
                    "Values for request parameters are invalid: networkAcls.ipRules[].",
                );
            }
            for list in ["ipRules", "virtualNetworkRules", "resourceAccessRules"] {
                if acls.get(list).is_none() {
                    acls[list] = json!([]);
                }
            }
            st.writes.push(format!("PATCH {}", req.path_only()));
            let account = st.resources.get_mut(&path).expect("checked");
            account["properties"]["networkAcls"] = acls;
            Response::json(200, account.to_string())
        }
        "PATCH" if path.contains("microsoft.eventgrid/") && st.resources.contains_key(&path) => {
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => {
                    return arm_error(400, "BadRequest", "The request body is not valid JSON.");
                }
            };
            // Top-level properties merge: an omitted list is kept.
            let mut merged = st.resources[&path].clone();
            if let Some(sent) = body["properties"].as_object() {
                for (k, v) in sent {
                    merged["properties"][k] = v.clone();
                }
            }
            if let Some(rules) = merged["properties"]["inboundIpRules"].as_array_mut() {
                if rules.len() > 128 {
                    return arm_error(
                        400,
                        "InvalidRequest",
                        "The number of inbound IP rules exceeds the limit of 128.",
                    );
                }
                for r in rules.iter_mut() {
                    let mask = r["ipMask"].as_str().unwrap_or_default().to_owned();
                    let v4 = mask.parse::<ipnet::Ipv4Net>().is_ok()
                        || mask.parse::<std::net::Ipv4Addr>().is_ok();
                    if !v4 {
                        return arm_error(
                            400,
                            "InvalidRequest",
                            &format!(
                                "Invalid IP mask {mask}: only IPv4 addresses or IPv4 address ranges are supported."
                            ),
                        );
                    }
                    // `allow` is stored as `Allow`; it is the only action.
                    if !r["action"]
                        .as_str()
                        .is_some_and(|a| a.eq_ignore_ascii_case("allow"))
                    {
                        return arm_error(
                            400,
                            "InvalidRequest",
                            "The only supported action is Allow.",
                        );
                    }
                    r["action"] = json!("Allow");
                }
            }
            st.writes.push(format!("PATCH {}", req.path_only()));
            merged["properties"]["provisioningState"] = json!("Succeeded");
            st.resources.insert(path.clone(), merged.clone());
            if st.event_grid_empty_200 {
                return Response::new(200, "");
            }
            merged["properties"]["provisioningState"] = json!("Updating");
            // Like the recording: an absolute URL with an explicit port.
            let op = format!(
                "http://{}/subscriptions/{SUB}/providers/Microsoft.EventGrid/locations/westeurope/operationsStatus/{}?api-version=2025-02-15",
                req.header("host").unwrap_or_default(),
                st.writes.len()
            );
            Response::json(201, merged.to_string()).header("Azure-AsyncOperation", &op)
        }
        "PATCH"
            if path.contains("microsoft.keyvault/vaults") && st.resources.contains_key(&path) =>
        {
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => {
                    return arm_error(400, "BadRequest", "The request body is not valid JSON.");
                }
            };
            st.last_vault_patch = Some(body.clone());
            let mut vault = st.resources[&path].clone();
            if let Some(mut acls) = body["properties"].get("networkAcls").cloned() {
                let rules = acls["ipRules"].as_array().cloned().unwrap_or_default();
                if rules.len() > 1000 {
                    return arm_error(
                        400,
                        "BadRequest",
                        "The number of IP rules exceeds the limit of 1000.",
                    );
                }
                let mut stored = Vec::new();
                for (i, r) in rules.iter().enumerate() {
                    let v = r["value"].as_str().unwrap_or_default();
                    let net = v
                        .parse::<ipnet::Ipv4Net>()
                        .or_else(|_| v.parse::<std::net::Ipv4Addr>().map(ipnet::Ipv4Net::from));
                    match net {
                        Ok(n) if !n.network().is_private() => {
                            // A bare address comes back as /32.
                            stored.push(json!({"value": n.to_string()}));
                        }
                        _ => {
                            return arm_error(
                                400,
                                "BadRequest",
                                &format!(
                                    "Invalid value found at properties.networkAcls.ipRules[{i}].value: {v} belongs to forbidden range or is not a valid IPv4 address."
                                ),
                            );
                        }
                    }
                }
                acls["ipRules"] = Value::Array(stored);
                vault["properties"]["networkAcls"] = acls;
            }
            st.writes.push(format!("PATCH {}", req.path_only()));
            st.resources.insert(path.clone(), vault.clone());
            Response::json(200, vault.to_string())
        }
        _ => arm_error(
            405,
            "MethodNotAllowed",
            "The requested method is not allowed.",
        ),
    }
}

/// Storage accepts a bare public IPv4 address or a CIDR of /30 or wider.
fn storage_value_ok(v: &str) -> bool {
    let private = |a: std::net::Ipv4Addr| a.is_private() || a.is_loopback() || a.is_link_local();
    if let Ok(a) = v.parse::<std::net::Ipv4Addr>() {
        return !private(a);
    }
    match v.parse::<ipnet::Ipv4Net>() {
        Ok(n) => n.prefix_len() <= 30 && !private(n.network()),
        Err(_) => false,
    }
}

/// Azure answers subnet ids with `resourcegroups` lower-cased (recording).
fn recase_subnets(rs: &Value) -> Value {
    let mut out = rs.clone();
    if let Some(rules) = out["properties"]["virtualNetworkRules"].as_array_mut() {
        for r in rules {
            if let Some(id) = r["subnet"]["id"].as_str() {
                r["subnet"]["id"] =
                    Value::String(id.replace("/resourceGroups/", "/resourcegroups/"));
            }
        }
    }
    out
}
