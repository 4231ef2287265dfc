#!/usr/bin/env python3
"""The Helm chart deploy/helm/tollgate, rendered without a cluster and checked against the real
gateway (CTest `deploy_chart`, label "deploy").

  chart_test.py --render HELM_RENDER --tollgate TOLLGATE_BIN --repo REPO_ROOT

HELM_RENDER is tests/deploy/helm_render (Helm's template engine rebuilt from Debian's Go
packages). Variants rendered: defaults (must fail: no database URL), minimal (the database URL
only), gpu, existingSecret, HPA off (fixed replicas), admin listener/migration off with a
ServiceMonitor, service.type=LoadBalancer, TLS (with a ServiceMonitor), no preStop hook with the
longest drain its grace allows; must fail: a grace shorter than preStop + drain + 38 s (by one
second, and drain_timeout_ms=40000 with the default grace), TLS without a Secret. Each rendered
variant: every document parses (PyYAML, Debian's python3-yaml) and has apiVersion, kind and
metadata.name; kinds use the API versions of current Kubernetes; probes point at /readyz and
/healthz on the container's port, HTTPS exactly when TLS is on; the container's args are real
`tollgate` subcommands and flags (from the binary's own usage text); the preStop hook sleeps
preStopSleepSeconds and the grace period covers it, the drain and 38 s; the main Service publishes
the API port only and the admin port is on <fullname>-admin, always ClusterIP; TLS mounts the
Secret read-only where server.tls points; the Services, HPA, PDB and ServiceMonitor select the
pods; the Secret's keys are the variables the config interpolates or the binary reads; the Job
runs `migrate`.

Then the real thing: the minimal variant's ConfigMap config, Secret and container environment run
with the built binary against a fresh database on TOLLGATE_TEST_DATABASE_URL: the Job's command
(`tollgate migrate`), then the Deployment's command (`tollgate serve --config ...`, with --listen
127.0.0.1:0 added), which must load the config, answer /healthz and /readyz with 200, list the
local model in /v1/models, turn off the providers whose key variables are set but empty, serve
the admin API on its own listener only, and exit 0 on SIGTERM. Then the TLS variant's config with
a certificate made by openssl in the Secret's mount: /readyz over HTTPS 200, plain HTTP refused.
The model is stories260K.gguf from TOLLGATE_MODEL_DIR, REPO/models or REPO/../shared/models.
Anything missing fails the test with a message; nothing is skipped.
"""

import argparse
import copy
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from checks import check, finish  # tests/deploy/checks.py

try:
    import yaml
except ImportError:
    sys.exit("deploy_chart: PyYAML is missing: install Debian's python3-yaml (scripts/setup.sh does)")



def render(args, sets, expect_error=None):
    cmd = [args.render]
    for s in sets:
        cmd += ["--set", s]
    cmd.append(os.path.join(args.repo, "deploy", "helm", "tollgate"))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if expect_error is not None:
        check(r.returncode != 0 and expect_error in r.stderr,
              f"render {sets}: should fail with '{expect_error}', got rc {r.returncode}: {r.stderr.strip()[:300]}")
        return None
    if not check(r.returncode == 0, f"render {sets} failed: {r.stderr.strip()}"):
        return None
    notes = subprocess.run(cmd[:-1] + ["--notes", cmd[-1]], capture_output=True, text=True, timeout=60)
    check(notes.returncode == 0 and "Tollgate" in notes.stdout, f"NOTES.txt of {sets} does not render: {notes.stderr}")
    try:
        docs = [d for d in yaml.safe_load_all(r.stdout) if d is not None]
    except yaml.YAMLError as e:
        check(False, f"render {sets}: output is not YAML: {e}")
        return None
    return docs


API_VERSIONS = {
    "ConfigMap": "v1", "Secret": "v1", "Service": "v1", "Deployment": "apps/v1", "Job": "batch/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}


def usage_of(binary):
    """{subcommand: set of flags} from `tollgate --help` (the binary's usage text)."""
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    commands = {}
    for line in (r.stdout + r.stderr).splitlines():
        m = re.match(r"\s+tollgate ([a-z-]+)(.*)", line)
        if m:
            commands.setdefault(m.group(1), set()).update(re.findall(r"--([a-z-]+)", m.group(2)))
    # "Every command but serve takes [--config FILE] [--database-url URL]" (main.cpp kUsage).
    for c in commands:
        commands[c].update({"config", "database-url"})
    return commands


def check_args(argv, commands, where):
    check(argv and argv[0] in commands, f"{where}: '{argv[0] if argv else ''}' is not a tollgate subcommand "
                                        f"({sorted(commands)})")
    if argv and argv[0] in commands:
        for a in argv[1:]:
            if a.startswith("--"):
                check(a[2:].split("=")[0] in commands[argv[0]], f"{where}: tollgate {argv[0]} has no flag {a}")


def interpolated(text):
    """Variables a config interpolates: ${VAR} (required) and ${VAR:-default}."""
    return {m.group(1): m.group(2) is not None for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}", text)}


def check_variant(name, docs, values, commands, repo):
    by_kind = {}
    for d in docs:
        ok = isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name")
        if not check(ok, f"{name}: a document lacks apiVersion/kind/metadata.name: {str(d)[:200]}"):
            continue
        kind = d["kind"]
        check(API_VERSIONS.get(kind) == d["apiVersion"], f"{name}: {kind} has apiVersion {d['apiVersion']}")
        check(len(d["metadata"]["name"]) <= 63, f"{name}: {kind} name too long")
        if kind == "Service" and d["metadata"]["name"].endswith("-admin"):
            kind = "Service/admin"  # the admin API's own Service
        check(kind not in by_kind, f"{name}: two {kind} documents")
        by_kind[kind] = d

    dep = by_kind.get("Deployment")
    cm = by_kind.get("ConfigMap")
    svc = by_kind.get("Service")
    if not (check(dep, f"{name}: no Deployment") and check(cm, f"{name}: no ConfigMap") and
            check(svc, f"{name}: no Service")):
        return by_kind
    config_text = cm["data"]["tollgate.yaml"]
    config = yaml.safe_load(config_text)
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    (c,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check("http" in ports, f"{name}: container has no port named http")
    check(config["server"]["listen"] == f"0.0.0.0:{ports.get('http')}",
          f"{name}: server.listen {config['server']['listen']} is not the container port {ports.get('http')}")
    tls_on = bool(values.get("tls", {}).get("enabled"))
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        check(get.get("path") == path, f"{name}: {probe} path {get.get('path')}, want {path}")
        check(get.get("scheme", "HTTP") == ("HTTPS" if tls_on else "HTTP"),
              f"{name}: {probe} scheme {get.get('scheme')} with TLS {'on' if tls_on else 'off'}")
        port = get.get("port")
        check(port == "http" or port == ports.get("http"), f"{name}: {probe} port {port} is not the gateway's port")
    check_args(c["args"], commands, f"{name}: Deployment args")
    check(c["args"][:3] == ["serve", "--config", "/etc/tollgate/tollgate.yaml"], f"{name}: Deployment args {c['args']}")

    # The config file the args name is the ConfigMap's key, mounted there.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    for m in mounts:
        check(m in vols, f"{name}: volumeMount {m} has no volume")
    check(mounts["config"]["mountPath"] == "/etc/tollgate" and
          vols["config"]["configMap"]["name"] == cm["metadata"]["name"], f"{name}: config volume is not the ConfigMap")
    check(mounts["spool"]["mountPath"] == config["usage"]["spool_dir"], f"{name}: usage.spool_dir is not the spool mount")
    check("emptyDir" in vols["spool"], f"{name}: spool must be per pod (emptyDir)")
    env_values = {e["name"]: e.get("value") for e in c.get("env", [])}
    for m in config.get("models", []):
        for e in ([m["endpoint"]] if "endpoint" in m else m.get("endpoints", [])):
            if config["providers"][e["provider"]]["type"] == "local":
                path = e["model"].replace("${TOLLGATE_MODEL_DIR}", env_values.get("TOLLGATE_MODEL_DIR", "?"))
                check(path.startswith(mounts["models"]["mountPath"] + "/"),
                      f"{name}: local model {e['model']} is outside the models mount")

    # Security: non-root with the Dockerfile's uid, read-only root, spool and /tmp writable.
    dockerfile = open(os.path.join(repo, "deploy", "Dockerfile")).read()
    uid = int(re.search(r"useradd[^\n]*--uid (\d+)", dockerfile).group(1))
    psc, csc = spec["securityContext"], c["securityContext"]
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == uid, f"{name}: pod not non-root as uid {uid}")
    check(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False,
          f"{name}: container securityContext {csc}")
    check(spec.get("automountServiceAccountToken") is False, f"{name}: service account token mounted")

    # Draining: the preStop sleep keeps the pod serving while the endpoints drop it; then the
    # gateway drains (drain_timeout_ms), cancelled calls get 8 s, the usage flush up to 30 s.
    pre_stop_s = values.get("preStopSleepSeconds", 0)
    hook = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command")
    if pre_stop_s > 0:
        check(hook == ["sleep", str(pre_stop_s)], f"{name}: preStop hook {hook}, want sleep {pre_stop_s}")
        # The runtime image (deploy/Dockerfile) is Debian, whose coreutils has /bin/sleep.
        check(re.search(r"^ARG DEBIAN_IMAGE=debian:12-slim$", dockerfile, re.M) and
              re.search(r"^FROM \$\{DEBIAN_IMAGE\} AS runtime-base$", dockerfile, re.M),
              f"{name}: the runtime image is not debian:12-slim: is `sleep` in it?")
    else:
        check(hook is None, f"{name}: preStop hook {hook} although preStopSleepSeconds is 0")
    drain_ms = config["server"].get("drain_timeout_ms", 30000)
    need_s = pre_stop_s + -(-drain_ms // 1000) + 38
    check(spec["terminationGracePeriodSeconds"] >= need_s,
          f"{name}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} < preStop {pre_stop_s} s + "
          f"drain {drain_ms} ms + 38 s")

    # TLS: the kubernetes.io/tls Secret mounted read-only where server.tls points.
    tls_conf = config["server"].get("tls")
    if tls_on:
        mount = mounts.get("tls") or {}
        vol = (vols.get("tls") or {}).get("secret") or {}
        check(mount.get("readOnly") is True and mount.get("mountPath") == values["tls"]["mountPath"],
              f"{name}: TLS mount {mount}")
        check(vol.get("secretName") == values["tls"]["existingSecret"], f"{name}: TLS volume {vol}")
        files = {i["key"]: i["path"] for i in vol.get("items", [])} or {"tls.crt": "tls.crt", "tls.key": "tls.key"}
        check(tls_conf == {"cert_file": f"{mount.get('mountPath')}/{files.get('tls.crt')}",
                           "key_file": f"{mount.get('mountPath')}/{files.get('tls.key')}"},
              f"{name}: server.tls {tls_conf} is not the mounted Secret's tls.crt and tls.key")
        check(not any(mount.get("mountPath", "").startswith(m["mountPath"] + "/") for m in c["volumeMounts"]),
              f"{name}: the TLS Secret is mounted inside another volume")
    else:
        check(tls_conf is None and "tls" not in mounts, f"{name}: TLS configured although tls.enabled is off")

    # Selection: the Service, PDB, HPA and ServiceMonitor find these pods.
    pod_labels = pod["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    check(all(pod_labels.get(k) == v for k, v in selector.items()), f"{name}: Deployment selector misses its pods")
    admin_svc = by_kind.get("Service/admin")
    for s in (svc, admin_svc) if admin_svc else (svc,):
        check(all(pod_labels.get(k) == v for k, v in s["spec"]["selector"].items()),
              f"{name}: Service {s['metadata']['name']} misses the pods")
        for p in s["spec"]["ports"]:
            check(p["targetPort"] in ports or p["targetPort"] in ports.values(),
                  f"{name}: Service port {p['name']} targets {p['targetPort']}, not a container port")
    # The main Service (whatever its type) publishes the API port only; the admin API has its own
    # ClusterIP Service.
    check([p["targetPort"] for p in svc["spec"]["ports"]] == ["http"],
          f"{name}: Service {svc['metadata']['name']} publishes {svc['spec']['ports']}, want the API port only")
    check(svc["spec"]["type"] == values["service"]["type"], f"{name}: Service type {svc['spec']['type']}")
    if "admin" in ports:
        if check(admin_svc, f"{name}: an admin port without a Service of its own"):
            check(admin_svc["metadata"]["name"] == svc["metadata"]["name"] + "-admin" and
                  admin_svc["spec"]["type"] == "ClusterIP" and
                  [(p["port"], p["targetPort"]) for p in admin_svc["spec"]["ports"]] == [(ports["admin"], "admin")],
                  f"{name}: admin Service {admin_svc['metadata']['name']} {admin_svc['spec']}")
    else:
        check(admin_svc is None, f"{name}: an admin Service without an admin port")
    if "admin" in ports:
        check(config["billing"].get("admin_listen") == f"0.0.0.0:{ports['admin']}",
              f"{name}: admin port {ports['admin']} is not billing.admin_listen")
    else:
        check("admin_listen" not in config.get("billing", {}), f"{name}: admin_listen without an admin port")
    if "PodDisruptionBudget" in by_kind:
        sel = by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
        check(all(pod_labels.get(k) == v for k, v in sel.items()), f"{name}: PDB misses the pods")
    hpa = by_kind.get("HorizontalPodAutoscaler")
    if hpa:
        ref = hpa["spec"]["scaleTargetRef"]
        check(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"], f"{name}: HPA target {ref}")
        check("replicas" not in dep["spec"], f"{name}: Deployment sets replicas while an HPA scales it")
    else:
        check(dep["spec"].get("replicas") == values.get("replicaCount"), f"{name}: replicas {dep['spec'].get('replicas')}")
    if "ServiceMonitor" in by_kind:
        sm = by_kind["ServiceMonitor"]["spec"]
        check(all(svc["metadata"]["labels"].get(k) == v for k, v in sm["selector"]["matchLabels"].items()),
              f"{name}: ServiceMonitor misses the Service")
        check(sm["endpoints"][0]["port"] == "http" and sm["endpoints"][0]["path"] == "/metrics",
              f"{name}: ServiceMonitor endpoint {sm['endpoints']}")
        check(sm["endpoints"][0].get("scheme", "http") == ("https" if tls_on else "http"),
              f"{name}: ServiceMonitor scheme {sm['endpoints'][0].get('scheme')} with TLS {'on' if tls_on else 'off'}")

    # Secrets: the pods' environment comes from the Secret; its keys are what the config
    # interpolates or the binary reads (TOLLGATE_DATABASE_URL, TOLLGATE_SECRET_KEY).
    secret_name = c["envFrom"][0]["secretRef"]["name"]
    secret = by_kind.get("Secret")
    env_names = {e["name"] for e in c.get("env", [])}
    wanted = interpolated(config_text)
    binary_reads = {"TOLLGATE_DATABASE_URL", "TOLLGATE_SECRET_KEY"}
    chart_secret_keys = set(values["secrets"])
    if values.get("existingSecret"):
        check(secret is None, f"{name}: a Secret is rendered although existingSecret is set")
        check(secret_name == values["existingSecret"], f"{name}: envFrom {secret_name}, want the existingSecret")
    elif check(secret is not None, f"{name}: no Secret"):
        check(secret_name == secret["metadata"]["name"], f"{name}: envFrom {secret_name} is not the Secret")
        keys = set(secret.get("stringData") or {})
        check(keys <= set(wanted) | binary_reads, f"{name}: Secret keys {sorted(keys - set(wanted) - binary_reads)} are "
                                                  f"read by nothing")
        check(all(v for v in (secret.get("stringData") or {}).values()), f"{name}: Secret has an empty value")
    for var, has_default in wanted.items():
        check(has_default or var in chart_secret_keys or var in env_names,
              f"{name}: the config interpolates ${{{var}}}, which neither the Secret nor env provides")

    job = by_kind.get("Job")
    if job:
        jc = job["spec"]["template"]["spec"]["containers"][0]
        check(jc["args"] == ["migrate"], f"{name}: Job args {jc['args']}")
        check_args(jc["args"], commands, f"{name}: Job args")
        check(jc["image"] == c["image"], f"{name}: Job image {jc['image']} is not the gateway's {c['image']}")
        check(jc["envFrom"] == c["envFrom"], f"{name}: Job environment differs from the pods'")
        hooks = job["metadata"]["annotations"]["helm.sh/hook"]
        check(hooks == "pre-install,pre-upgrade", f"{name}: Job hooks {hooks}")
        check(job["spec"]["template"]["spec"]["restartPolicy"] == "Never", f"{name}: Job restartPolicy")
        if secret is not None:
            sa = secret["metadata"].get("annotations") or {}
            check(sa.get("helm.sh/hook") == hooks and
                  int(sa.get("helm.sh/hook-weight", 0)) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"]),
                  f"{name}: the Secret must be a hook made before the migration Job")
    return by_kind


def get(url, token=None, context=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Pod:
    """A rendered Deployment's container run as a local process: the ConfigMap's config at the
    path the args name, the Secret's stringData and the container's env as its environment, and
    the Secret volumes' files at their mountPath (a local folder); --listen 127.0.0.1:0 added."""

    def __init__(self, args, docs, tmp, tag, extra_env=None, secret_files=None):
        by_kind = {d["kind"]: d for d in docs}
        self.container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        self.job_container = by_kind["Job"]["spec"]["template"]["spec"]["containers"][0] if "Job" in by_kind else None
        self.env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        self.env.update(by_kind["Secret"]["stringData"])
        self.env.update({e["name"]: e["value"] for e in self.container.get("env", [])})
        self.env.update(extra_env or {})
        self.dir = os.path.join(tmp, tag)
        etc = os.path.join(self.dir, "etc-tollgate")
        os.makedirs(etc)
        config = by_kind["ConfigMap"]["data"]["tollgate.yaml"]
        self.mounts = {"/etc/tollgate": etc}  # the ConfigMap volume's mountPath
        for mount_path, files in (secret_files or {}).items():
            local = os.path.join(self.dir, "secret" + mount_path.replace("/", "-"))
            os.makedirs(local)
            for fname, content in files.items():
                with open(os.path.join(local, fname), "w") as f:
                    f.write(content)
            self.mounts[mount_path] = local
            config = config.replace(mount_path + "/", local + "/")
        with open(os.path.join(etc, "tollgate.yaml"), "w") as f:
            f.write(config)
        self.args, self.proc, self.port, self.log = args, None, None, None

    def mount(self, a):
        for path, local in self.mounts.items():
            a = a.replace(path + "/", local + "/")
        return a

    def run_job(self):
        argv = [self.args.tollgate] + [self.mount(a) for a in self.job_container["args"]]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)

    def start(self):
        port_file = os.path.join(self.dir, "port")
        argv = ([self.args.tollgate] + [self.mount(a) for a in self.container["args"]] +
                ["--listen", "127.0.0.1:0", "--port-file", port_file])
        self.log = open(os.path.join(self.dir, "serve.log"), "w+")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            if os.path.exists(port_file) and open(port_file).read().strip():
                self.port = int(open(port_file).read())
                break
            time.sleep(0.1)
        return check(self.port, f"`{' '.join(self.container['args'])}` did not start with the chart's config: "
                                f"{self.output()[-2000:]}")

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self, what):
        """SIGTERM; the exit status must be 0 (every usage row written)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, f"{what}: serve exited {rc} on SIGTERM: {self.output()[-1000:]}")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_for_real(args, commands):
    """The minimal variant's config, Secret and env with the real binary and a real database;
    then the TLS variant's."""
    dsn = os.environ.get("TOLLGATE_TEST_DATABASE_URL")
    if not check(dsn, "TOLLGATE_TEST_DATABASE_URL is not set (scripts/test.sh sets it; or "
                      "export TOLLGATE_TEST_DATABASE_URL=$(scripts/pg.sh start /tmp/pg --test))"):
        return
    model_dir = None
    for d in (os.environ.get("TOLLGATE_MODEL_DIR"), os.path.join(args.repo, "models"),
              os.path.join(args.repo, "..", "shared", "models")):
        if d and os.path.isfile(os.path.join(d, "stories260K.gguf")):
            model_dir = os.path.realpath(d)
            break
    if not check(model_dir, "stories260K.gguf not found in TOLLGATE_MODEL_DIR, models/ or ../shared/models "
                            "(README.md says where to get it)"):
        return
    psql = shutil.which("psql") or next((p for p in sorted(
        [f"/usr/lib/postgresql/{v}/bin/psql" for v in os.listdir("/usr/lib/postgresql")]
        if os.path.isdir("/usr/lib/postgresql") else [], reverse=True) if os.path.exists(p)), None)
    if not check(psql, "psql not found (scripts/setup.sh installs postgresql)"):
        return
    openssl = shutil.which("openssl")
    if not check(openssl, "openssl not found (scripts/setup.sh installs it)"):
        return
    db = f"tollgate_deploy_{os.getpid()}"
    db_url = urllib.parse.urlsplit(dsn)._replace(path="/" + db).geturl()
    subprocess.run([psql, dsn, "-XAtqc", f'CREATE DATABASE "{db}"'], check=True, timeout=30)
    tmp = tempfile.mkdtemp(prefix="tollgate-deploy-")
    pods = []
    try:
        admin_token = "deploy-test-admin-token-0123456789"
        base_sets = [f"secrets.TOLLGATE_DATABASE_URL={db_url}", f"secrets.TOLLGATE_ADMIN_TOKEN={admin_token}",
                     f"models.mountPath={model_dir}", f"spool.mountPath={tmp}/spool", "adminListener.port=0"]
        docs = render(args, base_sets)
        if docs is None:
            return
        os.makedirs(os.path.join(tmp, "spool"))
        # Provider keys set but empty (a Secret of your own, a compose .env line `KEY=`): the
        # providers must be off, not sent an empty key.
        pod = Pod(args, docs, tmp, "minimal", extra_env={"ANTHROPIC_API_KEY": "", "GEMINI_API_KEY": ""})
        pods.append(pod)
        r = pod.run_job()
        if not check(r.returncode == 0, f"the Job's `tollgate {' '.join(pod.job_container['args'])}` failed: "
                                        f"{r.stderr.strip()}"):
            return
        print(f"Job: tollgate {' '.join(pod.job_container['args'])}: {r.stderr.strip()}", flush=True)
        if not pod.start():
            return
        base = f"http://127.0.0.1:{pod.port}"
        for path in ("/healthz", "/readyz"):
            status, body = get(base + path)
            check(status == 200, f"GET {path}: {status} {body}")
        status, body = get(base + "/v1/models")
        ids = [m["id"] for m in json.loads(body).get("data", [])] if status == 200 else []
        check("local/stories260k" in ids, f"/v1/models lacks the chart's local model: {status} {body[:300]}")
        check(not {"anthropic/claude-sonnet-4.5", "google/gemini-2.5-flash"} & set(ids),
              f"/v1/models lists models of providers whose key is empty: {ids}")
        log = pod.output()
        for provider, var in (("anthropic", "ANTHROPIC_API_KEY"), ("google", "GEMINI_API_KEY")):
            check(f"provider {provider} disabled: ${{{var}}} is empty" in log,
                  f"no 'provider {provider} disabled: ${{{var}}} is empty' in the log: {log[-1500:]}")
        print(f"serve: /healthz and /readyz 200, models {ids}; empty keys turned anthropic and google off", flush=True)

        # The admin API: on its own listener (the admin Service's port), not on the main one.
        admin_port = None
        for _ in range(50):
            m = re.search(r"admin API on [^\s]*:(\d+)", pod.output())
            if m:
                admin_port = int(m.group(1))
                break
            time.sleep(0.1)
        if check(admin_port, "no 'admin API on HOST:PORT' line: billing.admin_listen not in effect"):
            status, body = get(f"http://127.0.0.1:{admin_port}/admin/v1/accounts", admin_token)
            check(status == 200, f"admin listener: GET /admin/v1/accounts {status} {body[:200]}")
            status, _ = get(base + "/admin/v1/accounts", admin_token)
            check(status != 200, f"main listener serves the admin API ({status}) although admin_listen is set")
        pod.stop("minimal")

        # TLS: a self-signed certificate as the kubernetes.io/tls Secret's tls.crt and tls.key.
        mount = "/etc/tollgate-tls"
        docs = render(args, base_sets + ["tls.enabled=true", "tls.existingSecret=tollgate-tls",
                                         f"tls.mountPath={mount}", "migration.enabled=false"])
        if docs is None:
            return
        key, crt = os.path.join(tmp, "tls.key"), os.path.join(tmp, "tls.crt")
        r = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                            "/CN=tollgate", "-keyout", key, "-out", crt], capture_output=True, text=True, timeout=60)
        if not check(r.returncode == 0, f"openssl req: {r.stderr}"):
            return
        pod = Pod(args, docs, tmp, "tls",
                  secret_files={mount: {"tls.crt": open(crt).read(), "tls.key": open(key).read()}})
        pods.append(pod)
        if not pod.start():
            return
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # what the kubelet's HTTPS probes do
        probe = pod.container["readinessProbe"]["httpGet"]
        status, body = get(f"{probe.get('scheme', 'HTTP').lower()}://127.0.0.1:{pod.port}{probe['path']}", context=insecure)
        check(status == 200, f"TLS: the readiness probe ({probe}) got {status} {body[:200]}")
        try:
            status, _ = get(f"http://127.0.0.1:{pod.port}/readyz")
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
            status = f"refused ({type(e).__name__})"
        check(status != 200, f"TLS: plain HTTP on the API port answered {status}")
        print(f"serve with tls.enabled: HTTPS {probe['path']} 200, plain HTTP {status}", flush=True)
        pod.stop("tls")
    finally:
        for pod in pods:
            pod.kill()
        subprocess.run([psql, dsn, "-XAtqc", f'DROP DATABASE IF EXISTS "{db}"'], timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def merged(values, overrides):
    """values with overrides merged in, maps key by key (as Helm's --set)."""
    out = copy.deepcopy(values)
    for k, v in overrides.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", required=True)
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--repo", required=True)
    args = ap.parse_args()
    for what, path in (("helm_render", args.render), ("tollgate", args.tollgate)):
        if not os.access(path, os.X_OK):
            sys.exit(f"deploy_chart: {what} binary {path} does not exist; build it (cmake --build build)")
    commands = usage_of(args.tollgate)
    check({"serve", "migrate"} <= set(commands), f"tollgate --help lists {sorted(commands)}")
    with open(os.path.join(args.repo, "deploy", "helm", "tollgate", "values.yaml")) as f:
        defaults = yaml.safe_load(f)

    db = "secrets.TOLLGATE_DATABASE_URL=postgresql://tollgate:pw@postgres:5432/tollgate"
    render(args, [], expect_error="secrets.TOLLGATE_DATABASE_URL is required")
    # terminationGracePeriodSeconds >= preStopSleepSeconds + drain_timeout_ms/1000 + 38 (75 = 5 + 32 + 38).
    too_short = "terminationGracePeriodSeconds (75 s) is too short"
    render(args, [db, "config.server.drain_timeout_ms=40000"], expect_error=too_short)
    render(args, [db, "config.server.drain_timeout_ms=32001"], expect_error=too_short)
    render(args, [db, "terminationGracePeriodSeconds=72"],
           expect_error="terminationGracePeriodSeconds (72 s) is too short: it must be at least preStopSleepSeconds")
    render(args, [db, "tls.enabled=true"], expect_error="tls.enabled needs tls.existingSecret")
    tls = {"enabled": True, "existingSecret": "tollgate-tls", "mountPath": "/etc/tollgate-tls"}
    variants = {
        "minimal": ([db], {}),
        "drain-32s": ([db, "config.server.drain_timeout_ms=32000"], {}),
        "no-prestop,drain-37s": ([db, "preStopSleepSeconds=0", "config.server.drain_timeout_ms=37000"],
                                 {"preStopSleepSeconds": 0}),
        "loadbalancer": ([db, "service.type=LoadBalancer"], {"service": {"type": "LoadBalancer"}}),
        "tls,servicemonitor": ([db, "tls.enabled=true", "tls.existingSecret=tollgate-tls", "serviceMonitor.enabled=true"],
                               {"tls": tls}),
        "gpu": ([db, "gpu.enabled=true", "secrets.OPENAI_API_KEY=sk-test", "models.existingClaim=tollgate-models"], {}),
        "existingSecret": (["existingSecret=tollgate-env"], {"existingSecret": "tollgate-env"}),
        "hpa-off": ([db, "autoscaling.enabled=false", "replicaCount=3"], {"replicaCount": 3}),
        "admin-shared,no-migration,servicemonitor": (
            [db, "adminListener.enabled=false", "migration.enabled=false", "serviceMonitor.enabled=true",
             "podDisruptionBudget.enabled=false"], {}),
    }
    for name, (sets, overrides) in variants.items():
        docs = render(args, sets)
        if docs is None:
            continue
        values = merged(defaults, overrides)
        kinds = check_variant(name, docs, values, commands, args.repo)
        print(f"{name}: {len(docs)} documents: {', '.join(sorted(kinds))}", flush=True)
        dep = kinds.get("Deployment")
        if not dep:
            continue
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        if name == "gpu":
            check(c["resources"]["limits"].get("nvidia.com/gpu") == 1, "gpu: no nvidia.com/gpu limit")
            check(spec.get("nodeSelector", {}).get("nvidia.com/gpu.present") == "true", "gpu: no GPU nodeSelector")
            check(any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])), "gpu: no GPU toleration")
            check(c["image"].endswith("-cuda"), f"gpu: image {c['image']} is not the CUDA variant")
            check(kinds["Secret"]["stringData"].get("OPENAI_API_KEY") == "sk-test", "gpu: provider key not in Secret")
            models_vol = next(v for v in spec["volumes"] if v["name"] == "models")
            check(models_vol == {"name": "models", "persistentVolumeClaim": {"claimName": "tollgate-models", "readOnly": True}},
                  f"gpu: models volume {models_vol} is not the existingClaim alone")
        elif name == "minimal":
            check(set(kinds) == {"ConfigMap", "Secret", "Deployment", "Service", "Service/admin",
                                 "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"}, f"minimal: kinds {sorted(kinds)}")
            check(set(kinds["Secret"]["stringData"]) == {"TOLLGATE_DATABASE_URL"},
                  "minimal: the Secret holds keys without a value")
            check("nvidia.com/gpu" not in c["resources"].get("limits", {}), "minimal: asks for a GPU")
        elif name == "loadbalancer":
            check(kinds["Service"]["spec"]["type"] == "LoadBalancer" and
                  kinds.get("Service/admin", {}).get("spec", {}).get("type") == "ClusterIP",
                  "loadbalancer: want the API Service LoadBalancer and the admin Service ClusterIP")
        elif name.startswith("tls"):
            check(kinds.get("ServiceMonitor", {}).get("spec", {}).get("endpoints", [{}])[0].get("tlsConfig"),
                  "tls: the ServiceMonitor has no tlsConfig")
        elif name == "hpa-off":
            check("HorizontalPodAutoscaler" not in kinds, "hpa-off: HPA rendered")
        elif name.startswith("admin-shared"):
            check("Job" not in kinds and "PodDisruptionBudget" not in kinds and "ServiceMonitor" in kinds,
                  f"{name}: kinds {sorted(kinds)}")
            check(not (kinds["Secret"]["metadata"].get("annotations") or {}).get("helm.sh/hook"),
                  f"{name}: Secret is a hook without a migration Job")

    run_for_real(args, commands)
    finish("deploy_chart")


if __name__ == "__main__":
    main()
