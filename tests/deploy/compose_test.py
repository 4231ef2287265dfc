#!/usr/bin/env python3
"""deploy/compose.yaml and the YAML of deploy/ checked without a Docker engine (CTest
`deploy_compose`, label "deploy").

  compose_test.py --repo REPO_ROOT --render HELM_RENDER

- yamllint (Debian's, tests/deploy/yamllint.yaml: "relaxed" with 120-column lines, warnings fail)
  on compose.yaml, its Prometheus and Grafana provisioning files, the chart's Chart.yaml and
  values.yaml, and the chart rendered with its minimal values (the templates themselves are not
  YAML);
- `docker-compose config` (Debian's docker-compose 1.29, which validates and interpolates a
  compose file without an engine) with deploy/.env.example: must pass; with no settings: must
  refuse, naming POSTGRES_PASSWORD;
- the resolved compose file: migrate runs `migrate` after postgres is healthy, tollgate runs
  `serve` after migrate completed, its healthcheck is /readyz on TOLLGATE_LISTEN's port, which is
  the published port, its stop grace covers the config's drain timeout + 8 s (calls cancelled after
  the drain) + 30 s (the usage flush while PostgreSQL is unreachable), the spool and models
  volumes are mounted where the config reads them, and every bind-mounted file exists;
- no deploy file says an empty provider key is sent upstream or leaves its provider on (the
  gateway turns such a provider off; deploy_chart runs that);
- `promtool check config` on deploy/compose/prometheus.yml with the rules beside it, as mounted.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from checks import check, finish  # tests/deploy/checks.py

try:
    import yaml
except ImportError:
    sys.exit("deploy_compose: PyYAML is missing: install Debian's python3-yaml (scripts/setup.sh does)")



def need(tool):
    path = shutil.which(tool)
    if not path:
        sys.exit(f"deploy_compose: {tool} not found; scripts/setup.sh installs it (Debian 12 package "
                 f"{ {'promtool': 'prometheus'}.get(tool, tool) })")
    return path


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)] if m else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--render", required=True)
    a = ap.parse_args()
    deploy = os.path.join(a.repo, "deploy")
    yamllint, compose, promtool = need("yamllint"), need("docker-compose"), need("promtool")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}

    # yamllint.
    with tempfile.TemporaryDirectory() as tmp:
        rendered = os.path.join(tmp, "rendered.yaml")
        r = subprocess.run([a.render, "--set", "secrets.TOLLGATE_DATABASE_URL=postgresql://t@db/t",
                            os.path.join(deploy, "helm", "tollgate")], capture_output=True, text=True)
        check(r.returncode == 0, f"helm_render: {r.stderr}")
        open(rendered, "w").write(r.stdout)
        files = [os.path.join(deploy, "compose.yaml"), os.path.join(deploy, "compose", "prometheus.yml"),
                 os.path.join(deploy, "helm", "tollgate", "Chart.yaml"),
                 os.path.join(deploy, "helm", "tollgate", "values.yaml"), rendered]
        for d, _, fs in os.walk(os.path.join(deploy, "compose", "grafana")):
            files += [os.path.join(d, f) for f in fs if f.endswith((".yaml", ".yml"))]
        r = subprocess.run([yamllint, "--strict", "-c", os.path.join(a.repo, "tests", "deploy", "yamllint.yaml")] + files,
                           capture_output=True, text=True)
        check(r.returncode == 0, f"yamllint:\n{r.stdout}{r.stderr}")
        print(f"yamllint --strict: {len(files)} files clean" if r.returncode == 0 else "yamllint: problems", flush=True)

    # docker-compose config.
    compose_file = os.path.join(deploy, "compose.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "empty.env")
        open(empty, "w").close()
        r = subprocess.run([compose, "-f", compose_file, "--env-file", empty, "config"], capture_output=True, text=True,
                           env=env)
        check(r.returncode != 0 and "POSTGRES_PASSWORD" in r.stderr,
              f"docker-compose config without settings should refuse naming POSTGRES_PASSWORD: {r.returncode} {r.stderr}")
    r = subprocess.run([compose, "-f", compose_file, "--env-file", os.path.join(deploy, ".env.example"), "config"],
                       capture_output=True, text=True, env=env)
    if not check(r.returncode == 0, f"docker-compose config with .env.example: {r.stderr}"):
        return finish("deploy_compose")
    print("docker-compose config: valid with deploy/.env.example", flush=True)
    resolved = yaml.safe_load(r.stdout)
    services = resolved["services"]
    check({"postgres", "migrate", "tollgate", "prometheus", "grafana"} <= set(services), f"services {sorted(services)}")
    mig, tg = services["migrate"], services["tollgate"]
    check(mig["command"] == ["migrate"], f"migrate command {mig.get('command')}")
    check(mig["depends_on"]["postgres"]["condition"] == "service_healthy", "migrate does not wait for postgres")
    check(tg["command"][:1] == ["serve"], f"tollgate command {tg.get('command')}")
    check(tg["depends_on"]["migrate"]["condition"] == "service_completed_successfully", "tollgate does not wait for migrate")
    check(mig["image"] == tg["image"] and mig["build"] == tg["build"], "migrate and tollgate use different images")
    check(tg["build"]["dockerfile"] == "deploy/Dockerfile" and os.path.samefile(tg["build"]["context"], a.repo),
          f"build {tg['build']} is not deploy/Dockerfile in the repository root")
    tenv = tg["environment"]
    port = tenv["TOLLGATE_LISTEN"].rsplit(":", 1)[1]
    check(any(str(p.get("target")) == port for p in tg["ports"]), f"published ports {tg['ports']} miss {port}")
    check(f"http://127.0.0.1:{port}/readyz" in " ".join(tg["healthcheck"]["test"]), "tollgate healthcheck is not /readyz")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        check(tenv.get(key) is None, f"{key} is set ({tenv.get(key)!r}) although .env.example leaves it out")
    config = yaml.safe_load(open(os.path.join(a.repo, "config", "tollgate.yaml")))
    drain_s = config["server"]["drain_timeout_ms"] / 1000
    grace_s = seconds(tg.get("stop_grace_period", "10s"))
    check(grace_s >= drain_s + 8 + 30,
          f"stop_grace_period {tg.get('stop_grace_period')} < server.drain_timeout_ms {drain_s} s + 8 s (cancelled "
          f"calls) + 30 s (usage flush)")
    # The compose stack and the chart share one shutdown budget; the chart's default has the
    # preStop sleep on top (deploy_chart checks that one).
    chart = yaml.safe_load(open(os.path.join(deploy, "helm", "tollgate", "values.yaml")))
    check(grace_s == chart["terminationGracePeriodSeconds"],
          f"stop_grace_period {grace_s} s differs from the chart's terminationGracePeriodSeconds "
          f"{chart['terminationGracePeriodSeconds']}")

    # Empty provider keys turn their provider off (config.cpp: "${VAR} is empty"); no text may say
    # otherwise.
    stale = re.compile(r"empty (?:key|one|value)[^.;]*?(?:is sent|would be sent|is a key|sent (?:upstream )?as a key|"
                       r"stays on|switch\w* its provider on)", re.I | re.S)
    for rel in ("compose.yaml", ".env.example", "README.md", "Dockerfile", "helm/tollgate/values.yaml",
                "helm/tollgate/templates/secret.yaml", "helm/tollgate/templates/NOTES.txt"):
        text = re.sub(r"\s*\n\s*#?\s*", " ", open(os.path.join(deploy, rel)).read())
        m = stale.search(text)
        check(not m, f"deploy/{rel} says an empty provider key is used: '{m.group(0) if m else ''}'")
    targets = {v.get("target") if isinstance(v, dict) else v.split(":")[1]: v for v in tg["volumes"]}
    check(tenv["TOLLGATE_SPOOL_DIR"] in targets, f"no volume at TOLLGATE_SPOOL_DIR {tenv['TOLLGATE_SPOOL_DIR']}")
    check(tenv["TOLLGATE_MODEL_DIR"] in targets, f"no volume at TOLLGATE_MODEL_DIR {tenv['TOLLGATE_MODEL_DIR']}")
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            if isinstance(v, dict) and v.get("type") == "bind" and name != "tollgate":
                check(os.path.exists(v["source"]), f"{name}: bind mount source {v['source']} does not exist")
    db_url = tenv["TOLLGATE_DATABASE_URL"]
    pg = services["postgres"]["environment"]
    check(db_url == f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}",
          f"TOLLGATE_DATABASE_URL {db_url} does not match the postgres service")

    # promtool on the compose Prometheus config, with the rules as mounted beside it.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(deploy, "compose", "prometheus.yml"), tmp)
        shutil.copy(os.path.join(deploy, "prometheus", "tollgate-rules.yml"), tmp)
        r = subprocess.run([promtool, "check", "config", os.path.join(tmp, "prometheus.yml")], capture_output=True,
                           text=True)
        check(r.returncode == 0, f"promtool check config: {r.stdout}{r.stderr}")
    prom = yaml.safe_load(open(os.path.join(deploy, "compose", "prometheus.yml")))
    check(prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"tollgate:{port}"],
          "Prometheus does not scrape the tollgate service's port")
    grafana_vols = " ".join(v["target"] if isinstance(v, dict) else v for v in services["grafana"]["volumes"])
    check("/var/lib/grafana/dashboards/tollgate-dashboard.json" in grafana_vols, "the dashboard is not provisioned")
    return finish("deploy_compose")


if __name__ == "__main__":
    main()
