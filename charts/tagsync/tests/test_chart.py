#!/usr/bin/env python3
"""The chart's tests: render it with several value files and check the YAML,
validate the core manifests with kubernetes-validate --strict, feed the
rendered configuration to `tagsync config check`, and unit-test the alerts
with promtool.

Usage: HELM=path/to/helm TAGSYNC=path/to/tagsync python3 test_chart.py
Prints one line per test and a closing "N passed, N failed" line.
"""

import json
import os
import subprocess
import sys
import tempfile

import yaml

from harness import run_tests

CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELM = os.environ.get("HELM", "helm")
TAGSYNC = os.environ.get("TAGSYNC", "tagsync")
CORE_KINDS = {"ConfigMap", "CronJob", "Deployment", "Service", "ServiceAccount", "PersistentVolumeClaim"}
MONITORING = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
              "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]


def render(values=None, extra=()):
    args = [HELM, "template", "t", CHART]
    if values:
        args += ["-f", os.path.join(CHART, "ci", values)]
    args += list(extra)
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"helm template failed: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(docs):
    for d in docs:
        if d["kind"] == "CronJob":
            return d["spec"]["jobTemplate"]["spec"]["template"]
        if d["kind"] == "Deployment":
            return d["spec"]["template"]
    raise AssertionError("no workload rendered")


def config_check(docs):
    toml = one(docs, "ConfigMap", "t-tagsync")["data"]["tagsync.toml"]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml)
    out = subprocess.run([TAGSYNC, "--config", f.name, "--output", "json", "config", "check"],
                         capture_output=True, text=True)
    os.unlink(f.name)
    assert out.returncode == 0, f"tagsync rejects the rendered config: {out.stderr}\n{toml}"
    return toml, json.loads(out.stdout)


def check_hardened(template):
    spec = template["spec"]
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["fsGroup"] == 65532
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    c = spec["containers"][0]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/tmp"] == "tmp" and mounts["/var/lib/tagsync"] == "history"
    vols = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in vols["tmp"]


def validate(docs):
    core = [d for d in docs if d["kind"] in CORE_KINDS]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(core, f)
    out = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    # kubernetes-validate exits 0 for kinds it has no schema for: a core
    # kind must really have been validated.
    assert "Couldn't find schema" not in text, text
    for d in core:
        marker = f"passed for resource {d['kind'].lower()}/{d['metadata']['name']}"
        assert marker in text, f"{d['kind']} {d['metadata']['name']} was not validated:\n{text}"


def test_lint_every_values_file():
    for values in sorted(os.listdir(os.path.join(CHART, "ci"))):
        out = subprocess.run([HELM, "lint", "--strict", CHART, "-f", os.path.join(CHART, "ci", values)],
                             capture_output=True, text=True)
        assert out.returncode == 0, f"{values}: {out.stdout}{out.stderr}"


def test_cronjob_with_workload_identity_and_pushgateway():
    docs = render("cronjob-values.yaml")
    validate(docs)
    cj = one(docs, "CronJob")
    spec = cj["spec"]
    assert spec["schedule"] == "0 6 * * 1" and spec["timeZone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    for key in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"]:
        assert isinstance(spec[key], int)
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 1800 and job["ttlSecondsAfterFinished"] == 604800
    template = pod_spec(docs)
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    check_hardened(template)
    args = template["spec"]["containers"][0]["args"]
    assert args[0] == "sync"
    assert args[args.index("--pushgateway") + 1] == "http://pushgateway.monitoring:9091"
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == "00000000-0000-0000-0000-0000000000c1"
    assert template["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    toml, checked = config_check(docs)
    assert "[[targets]]" in toml and 'auth = "workload-identity"' in toml
    assert checked["database"] == "/var/lib/tagsync/tagsync.db"
    assert not [d for d in docs if d["kind"] in ("Deployment", "Service", "ServiceMonitor")]


def test_daemon_with_managed_identity_and_monitoring():
    docs = render("daemon-values.yaml", MONITORING)
    validate(docs)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][:7] == ["daemon", "--schedule", "0 5 * * *", "--time-zone", "Europe/Berlin", "--listen", "0.0.0.0:9464"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    check_hardened(dep["spec"]["template"])
    assert "azure.workload.identity/use" not in dep["spec"]["template"]["metadata"]["labels"]
    svc = one(docs, "Service")
    assert svc["spec"]["ports"][0]["port"] == 9464
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    rules = one(docs, "PrometheusRule")
    names = [r["alert"] for g in rules["spec"]["groups"] for r in g["rules"]]
    assert names == ["TagsyncNoRecentSuccess", "TagsyncTargetFailing", "TagsyncGuardRefused",
                     "TagsyncCapacityHigh", "TagsyncFeedStale"]
    toml, _ = config_check(docs)
    assert 'auth = "managed-identity"' in toml and "client_id" in toml
    # Without the Prometheus Operator's CRDs, no ServiceMonitor or rule.
    plain = render("daemon-values.yaml")
    assert not [d for d in plain if d["kind"] in ("ServiceMonitor", "PrometheusRule")]


def test_client_secret_from_an_existing_secret_and_an_existing_claim():
    docs = render("client-secret-values.yaml")
    validate(docs)
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"], "an existing claim is used as is"
    spec = pod_spec(docs)["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["history"]["persistentVolumeClaim"]["claimName"] == "tagsync-history"
    assert vols["client-secret"]["secret"]["secretName"] == "tagsync-sp"
    assert vols["client-secret"]["secret"]["items"] == [{"key": "password", "path": "client-secret"}]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["AZURE_CLIENT_ID"] == "00000000-0000-0000-0000-0000000000c3"
    assert "AZURE_CLIENT_SECRET" not in env, "the secret is a mounted file, never an env value"
    toml, _ = config_check(docs)
    assert 'client_secret_file = "/var/run/secrets/tagsync/client-secret"' in toml
    assert "client_secret =" not in toml


def test_notify_receivers_with_secrets_mounted_as_files():
    docs = render("notify-values.yaml")
    validate(docs)
    toml, report = config_check(docs)
    assert "[[notify]]" in toml, toml
    assert 'secret_file = "/var/run/secrets/tagsync-notify-0/secret"' in toml, toml
    assert 'url_file = "/var/run/secrets/tagsync-notify-1/url"' in toml, toml
    for key in ("secretName", "secretKey", "urlSecretName"):
        assert key not in toml, f"chart-only key {key} reached the config:\n{toml}"
    spec = pod_spec(docs)["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    sources = vols["notify-0"]["projected"]["sources"]
    assert sources == [{"secret": {"name": "tagsync-webhook", "items": [{"key": "hmac", "path": "secret"}]}}], sources
    sources = vols["notify-1"]["projected"]["sources"]
    assert sources == [{"secret": {"name": "tagsync-chat", "items": [{"key": "url", "path": "url"}]}}], sources
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["notify-0"]["mountPath"] == "/var/run/secrets/tagsync-notify-0"
    assert mounts["notify-1"]["readOnly"] is True
    # A receiver needs a URL, one way or the other, and a known event.
    for args in (["--set", "notify[0].name=x"],
                 ["--set", "notify[0].name=x,notify[0].url=https://h/x,notify[0].events[0]=target.aplied"],
                 ["--set", "notify[0].name=x,notify[0].url=http://h/x"]):
        out = subprocess.run([HELM, "template", "t", CHART] + args, capture_output=True, text=True)
        assert out.returncode != 0, f"{args} was accepted"


def test_dashboard_configmap_for_the_grafana_sidecar():
    docs = render("workload-identity-values.yaml")
    validate(docs)
    cm = one(docs, "ConfigMap", "t-tagsync-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["tagsync.json"])
    assert dash["uid"] == "tagsync"
    assert dash["templating"]["list"][0]["name"] == "datasource"
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "namespace", "job"], names
    titles = {p["title"] for p in dash["panels"]}
    for wanted in ("Target failures and drift", "Guard refusals", "Over-admitted addresses"):
        assert wanted in titles, titles
    exprs = []
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for t in panel["targets"]:
            e = t["expr"]
            assert "tagsync_" in e, e
            # Every selector is scoped to the chosen namespaces and jobs,
            # and every aggregation keeps them apart.
            for sel in e.split("tagsync_")[1:]:
                assert sel.split("{", 1)[1].startswith('namespace=~"$namespace", job=~"$job"'), e
            assert "by (namespace, job" in e, e
            exprs.append(e)
    # Every query parses: promtool checks them as recording rules with the
    # variables at their "All" value.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$namespace", ".*").replace("$job", ".*")}
        for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(rules, f)
    out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_values_file_keeps_every_type():
    docs = render("typed-values.yaml")
    toml, report = config_check(docs)
    for line in ("max_rules = 100", "retries = 5", "retries = 6", "concurrency = 16",
                 "summarize_min_prefix_len = 14", "summarize_max_extra_addresses = 100000",
                 "max_bytes = 67108864", "min_prefix_len_v4 = 12"):
        assert line in toml.splitlines() or f"{line}\n" in toml, f"{line!r} not in\n{toml}"
    assert ".0\n" not in toml.replace("max_removal_ratio = 1.0", "").replace("max_removal_ratio = 0.5", ""), toml
    assert "max_removal_ratio = 0.5" in toml and "include_unassigned = true" in toml, toml
    assert report["targets"][0]["name"] == "adt-events", report


def test_bad_values_fail_at_install():
    # Unknown keys are typos that would otherwise silently do nothing.
    for args in (["--set", "mod=daemon"], ["--set", "config.feed.sorce=url"],
                 ["--set", "targets[0].name=t,targets[0].resource_id=/subscriptions/s/resourceGroups/r/providers/Microsoft.EventHub/namespaces/n,targets[0].include_unassinged=true"],
                 ["--set", "monitoring.pushgateway.ulr=http://x"],
                 ["--set", "config.feed.retries=99"]):
        out = subprocess.run([HELM, "template", "t", CHART, "-f", os.path.join(CHART, "ci", "workload-identity-values.yaml")] + args,
                             capture_output=True, text=True)
        assert out.returncode != 0, f"{args} was accepted"
    for args in (["--set", "mode=sometimes"], ["--set", "schedule=every monday"],
                 ["--set", "config.azure.client_secret=hunter2"],
                 ["--set", "identity.type=client-secret"]):
        out = subprocess.run([HELM, "template", "t", CHART, "-f", os.path.join(CHART, "ci", "workload-identity-values.yaml")] + args,
                             capture_output=True, text=True)
        assert out.returncode != 0, f"{args} was accepted"
    # Workload identity without a client id says what is missing, once there
    # are targets; with none the chart installs for the feed history alone.
    target = ["--set", "targets[0].name=t,targets[0].resource_id=/subscriptions/s/resourceGroups/r/providers/Microsoft.EventHub/namespaces/n"]
    out = subprocess.run([HELM, "template", "t", CHART] + target, capture_output=True, text=True)
    assert out.returncode != 0 and "identity.clientId" in out.stderr, out.stderr
    docs = render()
    toml, report = config_check(docs)
    assert report["targets"] == [], report
    labels = pod_spec(docs)["metadata"]["labels"]
    assert "azure.workload.identity/use" not in labels, labels


def test_conventions_operators_expect():
    docs = render("workload-identity-values.yaml", ["--set", "fullnameOverride=adt-sync",
                  "--set", "extraEnv[0].name=HTTPS_PROXY,extraEnv[0].value=http://proxy:3128",
                  "--set", "extraEnvFrom[0].secretRef.name=proxy-env"])
    cron = one(docs, "CronJob", "adt-sync")
    job = cron["spec"]["jobTemplate"]["spec"]
    rule = job["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2], rule
    c = pod_spec(docs)["spec"]["containers"][0]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in c["env"], c["env"]
    assert c["envFrom"] == [{"secretRef": {"name": "proxy-env"}}], c
    chart = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
    assert chart["kubeVersion"].startswith(">=1.27"), chart


def promtool_test(rules, test_file):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            yaml.safe_dump(rules, f)
        with open(os.path.join(CHART, "tests", test_file)) as src, open(os.path.join(d, "test.yaml"), "w") as dst:
            dst.write(src.read())
        for cmd in (["promtool", "check", "rules", "rules.yaml"], ["promtool", "test", "rules", "test.yaml"]):
            out = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
            assert out.returncode == 0, out.stdout + out.stderr


def alert_names(rules):
    return {r["alert"] for g in rules["groups"] for r in g["rules"]}


def test_alert_rules_with_promtool():
    # The daemon, and a CronJob that pushes: tagsync's own metrics.
    for extra in (["--set", "mode=daemon"], ["--set", "monitoring.pushgateway.url=http://pushgateway:9091"]):
        docs = render("workload-identity-values.yaml", MONITORING + extra)
        rules = one(docs, "PrometheusRule")["spec"]
        assert "TagsyncNoRecentSuccess" in alert_names(rules), rules
        promtool_test(rules, "alerts_test.yaml")


def test_a_cronjob_without_a_pushgateway_alerts_on_kube_state_metrics():
    # No tagsync metric reaches Prometheus from such a CronJob: tagsync's
    # alerts could never fire, so the chart alerts on the CronJob itself.
    docs = render("workload-identity-values.yaml", MONITORING)
    rules = one(docs, "PrometheusRule")["spec"]
    assert alert_names(rules) == {"TagsyncCronJobLastRunFailed", "TagsyncCronJobNoRecentSuccess"}, rules
    assert all("tagsync_" not in r["expr"] for g in rules["groups"] for r in g["rules"]), rules
    promtool_test(rules, "alerts_cronjob_test.yaml")


if __name__ == "__main__":
    sys.exit(run_tests(globals(), "chart: "))
