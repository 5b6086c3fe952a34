#!/usr/bin/env python3
"""Checks of deploy/ that need more than one command; .ci/deploy-checks runs them.

  command-lines KEEL     every `keel` command line in docker-compose.yml, the Kubernetes
                         manifests and the Dockerfile parses: each is run with --help
                         appended, which makes clap check every flag and value before it
                         prints the help (a misspelt flag or a bad value fails; flags that
                         conflict, or a missing required one, are not caught this way).
  dashboard-queries URL  every expression of deploy/grafana/dashboards/keel.json, run
                         against the Prometheus at URL, returns at least one series.
"""

import json
import pathlib
import re
import subprocess
import sys
import urllib.parse
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def compose_command_lines():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if not str(service.get("image", "")).startswith("keel"):
            continue
        # The image's entrypoint is `keel`; `command` is its arguments.
        yield f"compose service {name}", ["keel", *service["command"]]
        test = service.get("healthcheck", {}).get("test")
        if test:
            assert test[0] == "CMD", f"compose service {name}: healthcheck must be an exec form [CMD, ...]"
            yield f"compose service {name} healthcheck", test[1:]


def k8s_command_lines():
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                if not c["image"].startswith("keel"):
                    continue
                where = f"{path.name} container {c['name']}"
                yield where, c.get("command", ["keel"]) + c.get("args", [])
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    command = c.get(probe, {}).get("exec", {}).get("command")
                    if command:
                        yield f"{where} {probe}", command


def dockerfile_command_lines():
    text = (DEPLOY / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    yield "Dockerfile ENTRYPOINT + CMD", entrypoint + cmd


def parses(keel, argv):
    """Whether `keel` accepts argv[1:]: clap checks each flag and value, then --help stops it."""
    assert argv[0] == "keel", f"not a keel command line: {argv}"
    out = subprocess.run([keel, *argv[1:], "--help"], capture_output=True, text=True, env={})
    return out.returncode == 0, out.stderr.strip()


def command_lines(keel):
    # The check must be able to fail.
    for bad in (["keel", "serve", "--idd", "1"], ["keel", "status", "--ready", "--format", "yaml"]):
        ok, _ = parses(keel, bad)
        assert not ok, f"the command-line check accepts {bad}: it checks nothing"
    lines = [*compose_command_lines(), *k8s_command_lines(), *dockerfile_command_lines()]
    failed = 0
    for where, argv in lines:
        ok, err = parses(keel, argv)
        print(f"{'ok ' if ok else 'BAD'} {where}: {' '.join(argv)}")
        if not ok:
            print(f"    {err}")
            failed += 1
    for need in ("compose service certs", "compose service keel-1", "statefulset.yaml container keel"):
        assert any(w == need for w, _ in lines), f"no command line found for {need}: did the file change shape?"
    if failed:
        sys.exit(f"{failed} of {len(lines)} keel command lines in deploy/ do not parse")
    print(f"{len(lines)} keel command lines in deploy/ parse")


def dashboard_expressions():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "keel.json").read_text())
    found = []

    def walk(node, title):
        if isinstance(node, dict):
            title = node.get("title", title)
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append((title, value))
                else:
                    walk(value, title)
        elif isinstance(node, list):
            for item in node:
                walk(item, title)

    walk(dashboard["panels"], None)
    for var in dashboard["templating"]["list"]:
        # label_values(METRIC, LABEL) lists LABEL's values on METRIC's series.
        m = re.fullmatch(r"label_values\((\w+), *\w+\)", var["definition"])
        assert m, f"variable {var['name']}: unexpected query {var['definition']}"
        found.append((f"variable ${var['name']}", m.group(1)))
    return found


def dashboard_queries(url):
    exprs = dashboard_expressions()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "keel.json").read_text())
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    empty = 0
    for title, expr in exprs:
        query = expr.replace("$__rate_interval", "15s")
        for name in variables:  # every variable at "All", as the dashboard opens
            query = query.replace(f"${name}", ".*")
        params = urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=10) as response:
            answer = json.load(response)
        series = len(answer["data"]["result"]) if answer["status"] == "success" else 0
        print(f"{series:3} series  {title}: {query}")
        if series == 0:
            empty += 1
    if empty:
        sys.exit(f"{empty} of {len(exprs)} dashboard expressions return nothing: dead panels")
    print(f"all {len(exprs)} dashboard expressions return data")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("command-lines", "dashboard-queries"):
        sys.exit(__doc__)
    {"command-lines": command_lines, "dashboard-queries": dashboard_queries}[sys.argv[1]](sys.argv[2])
