#!/usr/bin/env python3
"""Runs the container image exactly as the chart runs the pod: the chart is
rendered, and the rendered container's args, securityContext, config map and
volumes become podman flags (read-only root, the pod's uid and gid, all
capabilities dropped, no privilege escalation, the history volume, a tmpfs
/tmp). Then a CronJob pod (`sync` on a feed file, its history read back) and
a daemon pod (`/metrics`, `/healthz`, `/readyz`, SIGTERM) run in it. The
containers share the host's network so the test can reach the daemon's port
on 127.0.0.1; nothing in them goes further than loopback.

Usage: HELM=helm PODMAN=podman IMAGE=localhost/tagsync:ci python3 test_image.py
Prints one line per test and a closing "N passed, N failed" line.
"""

import gzip
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

from harness import run_tests

CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(CHART))
HELM = os.environ.get("HELM", "helm")
PODMAN = os.environ.get("PODMAN", "podman").split()
IMAGE = os.environ.get("IMAGE", "localhost/tagsync:ci")
FEED = os.path.join(ROOT, "tests", "fixtures", "ServiceTags_Public_20210106.json.gz")


def render(mode, extra=()):
    repo, tag = IMAGE.rsplit(":", 1)
    args = [HELM, "template", "t", CHART, "--set", f"mode={mode}",
            "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
            "--set", "config.feed.source=file", "--set", "config.feed.file=/feed/ServiceTags.json",
            *extra]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "t-tagsync")
    work = next(d for d in docs if d["kind"] in ("CronJob", "Deployment"))
    pod = work["spec"]["jobTemplate"]["spec"]["template"]["spec"] if work["kind"] == "CronJob" else work["spec"]["template"]["spec"]
    return config["data"]["tagsync.toml"], pod


def podman_flags(pod, workdir):
    """The podman flags that reproduce the pod's security settings and mounts."""
    (container,) = pod["containers"]
    psc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    flags = ["--network", "host", "--pull", "never"]
    uid, gid = psc.get("runAsUser"), psc.get("runAsGroup")
    assert uid and gid, "the chart must pin the pod's uid and gid"
    flags += ["--user", f"{uid}:{gid}"]
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    for cap in sc.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in container["volumeMounts"]:
        v = volumes[m["name"]]
        if "configMap" in v:
            flags += ["-v", f"{workdir}/config:{m['mountPath']}:ro"]
        elif "emptyDir" in v and v["emptyDir"].get("medium") != "Memory" and m["mountPath"] == "/tmp":
            flags += ["--tmpfs", f"{m['mountPath']}:rw,size=64m"]
        else:
            # The history: a persistent volume, or an emptyDir. fsGroup
            # makes it writable by the pod's group; a host directory owned
            # by the pod's user stands in for it.
            flags += ["-v", f"{workdir}/history:{m['mountPath']}"]
    flags += ["-v", f"{workdir}/feed:/feed:ro"]
    return flags, container["args"], uid, gid


def setup(mode, extra=()):
    toml, pod = render(mode, extra)
    work = tempfile.mkdtemp(prefix="tagsync-image-")
    os.chmod(work, 0o755)
    for d in ("config", "history", "feed"):
        os.mkdir(os.path.join(work, d))
        os.chmod(os.path.join(work, d), 0o755)
    with open(os.path.join(work, "config", "tagsync.toml"), "w") as f:
        f.write(toml)
    with gzip.open(FEED) as src, open(os.path.join(work, "feed", "ServiceTags.json"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    flags, args, uid, gid = podman_flags(pod, work)
    os.chown(os.path.join(work, "history"), uid, gid)
    return work, flags, args


def podman(*args, check=True):
    out = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def test_the_cronjob_pod_syncs_a_feed_file_and_keeps_its_history():
    work, flags, args = setup("cronjob")
    try:
        run = podman("run", "--rm", *flags, IMAGE, *args, check=False)
        assert run.returncode == 0, f"sync exited {run.returncode}:\n{run.stderr}"
        assert run.stdout.startswith("run 1: changed"), run.stdout + run.stderr
        assert "recorded the run" in run.stderr, run.stderr
        db = os.path.join(work, "history", "tagsync.db")
        assert os.path.exists(db), os.listdir(os.path.join(work, "history"))
        assert os.stat(db).st_uid == 65532, "the database belongs to the pod's user"
        # A second pod on the same volume sees the first one's history.
        hist = podman("run", "--rm", *flags, IMAGE, "history", "--config", "/etc/tagsync/tagsync.toml",
                      "--output", "json")
        assert '"change_number": 128' in hist.stdout or '"change_number":128' in hist.stdout, hist.stdout
        # The root file system really is read-only, and nothing runs as root.
        probe = podman("run", "--rm", "--entrypoint", "/bin/sh", *flags, IMAGE, "-c",
                       "id -u; touch /usr/local/bin/x 2>&1 || echo read-only", check=False)
        assert probe.stdout.splitlines()[0] == "65532", probe.stdout
        assert "read-only" in probe.stdout, probe.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def test_the_daemon_pod_serves_metrics_and_stops_on_sigterm():
    port = free_port()
    # A zone other than UTC, with the image's tzdata hidden under an empty
    # tmpfs: the daemon must resolve it from the copy built into tagsync.
    work, flags, args = setup("daemon", ["--set", f"daemon.port={port}", "--set", "daemon.runAtStart=true",
                                         "--set", "daemon.jitter=0s", "--set", "timeZone=Europe/Berlin"])
    name = f"tagsync-daemon-{port}"
    try:
        assert "Europe/Berlin" in args, args
        # notmpcopyup: podman would otherwise copy the image's files in.
        no_tzdata = ["--tmpfs", "/usr/share/zoneinfo:notmpcopyup"]
        hidden = podman("run", "--rm", "--entrypoint", "/bin/sh", *flags, *no_tzdata, IMAGE, "-c",
                        "ls -A /usr/share/zoneinfo | wc -l", check=False)
        assert hidden.stdout.strip() == "0", hidden.stdout + hidden.stderr
        podman("run", "-d", "--name", name, *flags, *no_tzdata, IMAGE, *args)
        body = ""
        for _ in range(150):
            status, body = fetch(f"http://127.0.0.1:{port}/metrics")
            if status == 200 and 'tagsync_runs_total{outcome="changed"} 1' in body:
                break
            time.sleep(0.2)
        else:
            logs = podman("logs", name, check=False)
            raise AssertionError(f"no successful run in the scrape:\n{body}\n{logs.stderr}")
        assert "tagsync_feed_change_number 128" in body, body
        assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert fetch(f"http://127.0.0.1:{port}/readyz")[0] == 200
        podman("stop", "--time", "20", name)
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        logs = podman("logs", name, check=False)
        assert code == "0", f"the daemon exited {code} on SIGTERM:\n{logs.stderr}"
        assert "daemon stopped" in logs.stdout + logs.stderr, logs.stderr
    finally:
        podman("rm", "-f", name, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run_tests(globals(), ""))
