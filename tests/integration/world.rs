//! The world of the target tests: a fake Resource Manager with one Event
//! Hubs namespace, one Service Bus namespace and one Storage account, a
//! scratch directory with their configuration, and helpers to run tagsync
//! against them and read the results.

use serde_json::{Value, json};

use crate::fake_arm::*;
use crate::util::*;

pub const EH: &str = "Microsoft.EventHub";
pub const SB: &str = "Microsoft.ServiceBus";

pub struct World {
    pub arm: FakeArm,
    pub dir: TestDir,
    pub cfg: String,
}

pub fn feed(prefixes: &[&str], change: u64) -> Vec<u8> {
    json!({"changeNumber": change, "cloud": "Public", "values": [
        {"name": "AzureDigitalTwins", "id": "AzureDigitalTwins", "properties": {"changeNumber": change,
         "region": "", "regionId": 0, "platform": "Azure", "systemService": "AzureDigitalTwins",
         "addressPrefixes": prefixes, "networkFeatures": null}},
        {"name": "AzureDigitalTwins.WestEurope", "id": "AzureDigitalTwins.WestEurope", "properties": {"changeNumber": 1,
         "region": "westeurope", "regionId": 18, "platform": "Azure", "systemService": "AzureDigitalTwins",
         "addressPrefixes": ["20.61.98.144/29"], "networkFeatures": null}}
    ]})
    .to_string()
    .into_bytes()
}

pub const P1: &str = "20.36.125.120/29";
pub const P2: &str = "20.39.2.134/32";
pub const P3: &str = "4.207.251.102/31";
pub const P4: &str = "20.43.47.72/29";
pub const V6: &str = "2603:1000:4::/64";

pub fn eh_rules() -> Value {
    json!({"publicNetworkAccess": "Enabled", "defaultAction": "Deny",
           "virtualNetworkRules": [{"subnet": {"id": subnet_id("vnet-eh")}, "ignoreMissingVnetServiceEndpoint": true}],
           "ipRules": [{"ipMask": "1.1.1.1", "action": "Allow"}], "trustedServiceAccessEnabled": false})
}

pub fn sb_rules() -> Value {
    json!({"publicNetworkAccess": "Enabled", "defaultAction": "Deny",
           "virtualNetworkRules": [{"subnet": {"id": subnet_id("vnet-sb")}, "ignoreMissingVnetServiceEndpoint": false}],
           "ipRules": [{"ipMask": "2.2.2.0/24", "action": "Allow"}], "trustedServiceAccessEnabled": false})
}

pub fn storage_acls() -> Value {
    json!({"bypass": "AzureServices", "resourceAccessRules": [],
           "virtualNetworkRules": [{"id": subnet_id("vnet-sa"), "action": "Allow", "state": "Succeeded"}],
           "ipRules": [{"value": "25.1.2.3", "action": "Allow"}], "defaultAction": "Deny"})
}

pub fn world(eh_sku: &str, extra: &str) -> World {
    let arm = FakeArm::start();
    arm.add_namespace(EH, "adt-eh", eh_sku, eh_rules());
    arm.add_namespace(SB, "adt-sb", "Premium", sb_rules());
    arm.add_storage("adtdeadletter", "northeurope", storage_acls());
    let dir = TestDir::new();
    let cfg = format!(
        r#"[azure]
auth = "managed-identity"
resource_manager = "{base}"
timeout = "2s"
retries = 2
retry_backoff = "10ms"

[[targets]]
name = "adt-events"
resource_id = "{eh}"
{extra}

[[targets]]
name = "adt-queue"
resource_id = "{sb}"

[[targets]]
name = "adt-deadletter"
resource_id = "{sa}"
"#,
        base = arm.base(),
        eh = namespace_id(EH, "adt-eh"),
        sb = namespace_id(SB, "adt-sb"),
        sa = storage_id("adtdeadletter"),
    );
    let cfg = dir
        .write("tagsync.toml", cfg)
        .to_str()
        .expect("utf-8")
        .to_owned();
    World { arm, dir, cfg }
}

impl World {
    /// Runs tagsync with the world's configuration, JSON output and the
    /// managed identity's environment.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let env = self.arm.identity_env();
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra_env);
        let mut all = vec!["--config", self.cfg.as_str(), "--output", "json"];
        all.extend_from_slice(args);
        self.dir.run_with(&all, &env)
    }

    /// Starts `tagsync sync --feed-file <feed.json>` with the world's
    /// configuration, JSON output and identity, without waiting for it.
    pub fn spawn_sync(
        &self,
        prefixes: &[&str],
        change: u64,
        extra: &[&str],
    ) -> std::process::Child {
        let f = self.dir.write("feed.json", feed(prefixes, change));
        let identity = self.arm.identity_env();
        let mut cmd = self.dir.command();
        cmd.args([
            "--config",
            &self.cfg,
            "--output",
            "json",
            "sync",
            "--feed-file",
        ])
        .arg(&f)
        .args(extra)
        .envs(identity.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("spawn tagsync sync")
    }

    /// Sends SIGTERM to a running tagsync.
    pub fn terminate(child: &std::process::Child) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn sync(&self, prefixes: &[&str], change: u64, extra: &[&str]) -> Run {
        let f = self.dir.write("feed.json", feed(prefixes, change));
        let mut args = vec!["sync", "--feed-file", f.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        let f_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let refs: Vec<&str> = f_args.iter().map(String::as_str).collect();
        self.run(&refs)
    }

    /// After an interrupted run: the next sync of `prefixes` finishes the
    /// job and the one after it finds every target unchanged.
    pub fn assert_settles(&self, prefixes: &[&str], change: u64) {
        self.sync(prefixes, change, &[]).assert_code(0);
        let again = self.sync(prefixes, change, &[]);
        again.assert_code(0);
        for name in ["adt-events", "adt-queue", "adt-deadletter"] {
            assert_eq!(
                self.target(&again.json(), name)["outcome"],
                "unchanged",
                "{name}"
            );
        }
    }

    pub fn target<'a>(&self, report: &'a Value, name: &str) -> &'a Value {
        report["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("target {name} in {report}"))
    }

    /// Makes every owned prefix look out of the tag for a long time: the
    /// ledger's stamps and the history's runs.
    pub fn age_history(&self) {
        self.age("UPDATE ownership SET last_desired_at = '2020-01-01T00:00:00.000Z'");
        self.age("UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z'");
    }

    pub fn age(&self, sql: &'static str) {
        execute_sql(&self.dir.db(), sql);
    }
}

pub fn masks(rules: &Value, key: &str) -> Vec<String> {
    rules
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r[key].as_str().expect("value").to_owned())
        .collect()
}
