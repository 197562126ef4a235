#!/usr/bin/env python3
"""Deploy validation of Parley: every file that builds or deploys the services, checked offline.

Run it through `bash scripts/validate-deploy.sh`, which installs the tools (helm, kubeconform,
skaffold, promtool, PyYAML, jsonschema), writes the roster as JSON and passes their paths here:

  python3 scripts/validate-deploy.py --helm H --kubeconform K --skaffold S --roster R [--promtool P]
                                     [--schemas DIR] [--cache DIR] [--kube-version V]

Each check prints PASS or FAIL in the summary; the output of a failed one is shown; the exit
status is 1 when any check failed. The services, their ports and stores come from the roster
(packages/contracts/src/roster.ts), never from a list here.

This program owns the rules that hold for EVERY render and every deploy file (Pod Security,
resources, probes, HPA/PDB/NetworkPolicy invariants, migration hooks, schema rejections, compose
and skaffold wiring). test/deploy.test.ts owns the assertions about specific values of specific
renders; a rule lives in one of the two, never both.
"""

import argparse
import contextlib
import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROSTER_FILE = "packages/contracts/src/roster.ts"
DOCKERFILE = "docker/service.Dockerfile"
CHART = "charts/parley"
RELEASE = "parley"
NAMESPACE = "parley"
MONITORING_APIS = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                   "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
INFRA = ("postgres", "redis", "rabbitmq", "mongodb", "mailpit")

# Set in main() from the roster: [{name, port, opsPort, store: {kind, database} | null, prefix, ...}, ...]
ROSTER = []
PORTS = {}
OPS_PORTS = {}


def rel(path):
    return os.path.relpath(path, ROOT)


# ------------------------------------------------------------------------------ check runner
class Problems(list):
    """What one check found wrong; a check passes when it stays empty."""

    def __call__(self, message):
        self.append(message)


RESULTS = []


def check(name, fn, *args):
    """Runs fn(problems, *args), which prints what it checked and returns a one-line summary."""
    problems, out = Problems(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            summary = fn(problems, *args)
            if summary and not problems:
                print(summary)
    except Exception:  # a crash of a check is its failure, the others still run
        problems(f"crashed:\n{traceback.format_exc()}")
    ok = not problems
    RESULTS.append(("PASS" if ok else "FAIL", name))
    if not ok:
        lines = out.getvalue().splitlines() + [f"  - {p}" for p in problems] + [f"{len(problems)} problem(s)"]
        print(f"\n---- FAIL: {name} ----", file=sys.stderr)
        print("\n".join(lines[-40:]), file=sys.stderr)
    return ok


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)


def command(problems, cmd, what=None):
    """A tool run as a check: its output is the check's log, a non-zero exit its failure."""
    p = run(cmd)
    print(p.stdout + p.stderr)
    if p.returncode != 0:
        problems(f"{what or os.path.basename(cmd[0])} exited {p.returncode}")


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_yaml(path):
    with open(os.path.join(ROOT, path)) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------- roster and Dockerfile
def roster_and_dockerfile(problems):
    """services/ has a folder for each roster entry and nothing else; the one Dockerfile takes the
    service as build arguments and copies exactly the workspace manifests the lockfile names."""
    names = [s["name"] for s in ROSTER]
    if len(set(names)) != len(names):
        problems(f"{ROSTER_FILE}: duplicate names in {names}")
    ports = [s["port"] for s in ROSTER] + [s["opsPort"] for s in ROSTER]
    if len(set(ports)) != len(ports):
        problems(f"{ROSTER_FILE}: duplicate ports (service and ops) in {ports}")
    folders = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "services/*/package.json")))
    if folders != sorted(names):
        problems(f"services/ has {folders} but {ROSTER_FILE} lists {sorted(names)}")
    copies = sorted(rel(p) for p in glob.glob(os.path.join(ROOT, "services/*/Dockerfile")))
    if copies:
        problems(f"{copies}: every image builds from {DOCKERFILE} with --build-arg SERVICE/PORT; delete the copies")

    with open(os.path.join(ROOT, DOCKERFILE)) as f:
        text = f.read()
    lines = [line.strip() for line in text.splitlines()]
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    for arg in ("SERVICE", "PORT"):
        declared = [line for line in lines[:first_from] if re.match(rf"ARG {arg}(=|$)", line)]
        if declared != [f"ARG {arg}"]:
            problems(f"{DOCKERFILE}: needs a global `ARG {arg}` without default (found {declared}); a default "
                     "would let a build without --build-arg build some service silently")
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, re.M | re.I)
    for stage in ("deps", "dev", "build", "runtime"):
        if stage not in stages:
            problems(f"{DOCKERFILE}: no stage {stage} (stages: {stages})")
    if stages and stages[-1] != "runtime":
        problems(f"{DOCKERFILE}: the last stage (the default target) is {stages[-1]}, not runtime")
    # The deps stage installs with --frozen-lockfile: a missing or extra workspace manifest fails it.
    with open(os.path.join(ROOT, "package.json")) as f:
        workspaces = json.load(f).get("workspaces") or []
    listed = sorted(m.group(1) for m in re.finditer(r"^COPY (\S+)/package\.json \S+$", text, re.M))
    actual = sorted(os.path.dirname(rel(p)) for pattern in workspaces
                    for p in glob.glob(os.path.join(ROOT, pattern, "package.json")))
    if listed != actual:
        problems(f"{DOCKERFILE} copies the manifests of {listed} but the workspaces are {actual}")
    return f"{len(ROSTER)} services in the roster and services/; {DOCKERFILE} copies {len(listed)} workspace manifests"


# ------------------------------------------------------------------------ kubeconform schemas
def k8s_schemas(problems, swagger_path, out_dir):
    """One JSON schema per kind ({kind}-{group}-{version}.json, kubeconform's layout), each a $ref
    into _definitions.json: the OpenAPI definitions made strict (no unknown fields), with
    IntOrString and Quantity accepting numbers as the API server does."""
    with open(swagger_path, "rb") as f:
        raw = f.read()
    stamp = os.path.join(out_dir, ".source-sha256")
    digest = hashlib.sha256(raw + b"strict-v1").hexdigest()
    if os.path.exists(stamp) and open(stamp).read() == digest:
        return f"schemas up to date in {out_dir}"
    spec = json.loads(raw)
    definitions = spec["definitions"]
    int_or_string = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    quantity = {"oneOf": [{"type": "string"}, {"type": "number"}]}

    def strict(node):
        if isinstance(node, dict):
            node = {k: strict(v) for k, v in node.items()}
            if node.get("format") == "int-or-string":
                return {k: v for k, v in node.items() if k not in ("type", "format")} | int_or_string
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            return node
        if isinstance(node, list):
            return [strict(v) for v in node]
        return node

    out = {}
    for name, schema in definitions.items():
        if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
            out[name] = {"description": schema.get("description", "")} | int_or_string
        elif name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
            out[name] = {"description": schema.get("description", "")} | quantity
        else:
            out[name] = strict(schema)
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, "*.json")):
        os.remove(old)
    with open(os.path.join(out_dir, "_definitions.json"), "w") as f:
        json.dump({"definitions": out}, f)
    count = 0
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
            path = os.path.join(out_dir, f"{kind.lower()}{suffix}.json".lower())
            if os.path.exists(path):
                continue
            with open(path, "w") as f:
                json.dump({"$ref": f"_definitions.json#/definitions/{name}"}, f)
            count += 1
    with open(stamp, "w") as f:
        f.write(digest)
    return f"wrote {count} kind schemas to {out_dir}"


# ------------------------------------------------------------------------------- value sets
class ValueSet:
    """One render of the chart: helm arguments, and what the pod rules expect of it."""

    def __init__(self, name, args, read_only_root=True):
        self.name, self.args, self.read_only_root = name, args, read_only_root
        self.file = None

    def deployed(self):
        """The roster services this value set leaves enabled (services.<name>.enabled: false in
        its values file turns one off)."""
        disabled = set()
        for i, arg in enumerate(self.args):
            if arg == "-f":
                services = (load_yaml(self.args[i + 1]) or {}).get("services") or {}
                disabled |= {n for n, s in services.items() if isinstance(s, dict) and s.get("enabled") is False}
        return [s["name"] for s in ROSTER if s["name"] not in disabled]


def each_service(setting):
    """--set services.<name>.<setting> for every roster service."""
    return [a for s in ROSTER for a in ("--set", f"services.{s['name']}.{setting}")]


def value_sets():
    ci = sorted(glob.glob(os.path.join(ROOT, CHART, "ci/*-values.yaml")))
    return [
        ValueSet("defaults", []),
        # full, existing-secret, minimal, ...
        *[ValueSet(os.path.basename(p)[: -len("-values.yaml")], ["-f", rel(p)]) for p in ci],
        # skaffold's file sync writes into the containers: no read-only root
        ValueSet("dev", ["-f", "k8s/dev/values.yaml"], read_only_root=False),
        # every service under an HPA (and so a PDB), and every service on a single replica
        ValueSet("autoscaling", each_service("autoscaling.enabled=true")),
        ValueSet("single-replica", each_service("replicas=1")),
    ]


# ----------------------------------------------------------------------------- pod rules
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
IMAGE_USER = 65532  # USER of docker/service.Dockerfile's stages


def pod_specs(docs):
    """(where, object, pod labels, pod spec) of everything that runs pods."""
    for d in docs:
        kind, spec = d.get("kind"), d.get("spec") or {}
        where = f"{kind}/{d['metadata']['name']}"
        if kind == "Pod":
            yield where, d, d["metadata"].get("labels") or {}, spec
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield where, d, spec["template"]["metadata"].get("labels") or {}, spec["template"]["spec"]
        elif kind == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
            yield where, d, template["metadata"].get("labels") or {}, template["spec"]


def env_value(container, name):
    for e in container.get("env") or []:
        if e["name"] == name and "value" in e:
            return e["value"]
    return None


def component(obj):
    return ((obj.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")


def pods(problems, vs):
    """Pod Security "restricted", plus the project's stricter baseline, on every pod of the render:
    the hardened securityContext set explicitly on pod and container, requests and limits, no
    service-account token; and the probes (on the ops port), ports and shutdown grace of every service."""
    count = 0
    for where, obj, _labels, spec in pod_specs(load_docs(vs.file)):
        count += 1
        psc = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag) is True:
                problems(f"{where}: {flag} is true")
        if spec.get("automountServiceAccountToken") is not False:
            problems(f"{where}: automountServiceAccountToken is not false")
        for v in spec.get("volumes") or []:
            types = set(v) - {"name"}
            if not types <= ALLOWED_VOLUMES:
                problems(f"{where}: volume {v['name']} uses {sorted(types - ALLOWED_VOLUMES)}")
        if psc.get("sysctls"):
            problems(f"{where}: pod sysctls are set")
        if psc.get("runAsNonRoot") is not True:
            problems(f"{where}: pod securityContext.runAsNonRoot is not true")
        if psc.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems(f"{where}: pod securityContext.seccompProfile is {psc.get('seccompProfile')}, not RuntimeDefault")
        if psc.get("runAsUser") == 0:
            problems(f"{where}: pod runAsUser 0")
        containers = [("container", c) for c in spec.get("containers") or []] + \
                     [("initContainer", c) for c in spec.get("initContainers") or []]
        for label, c in containers:
            cw = f"{where} {label} {c['name']}"
            sc = c.get("securityContext") or {}
            # every container states the hardening itself (a pod-level default is not enough)
            if sc.get("allowPrivilegeEscalation") is not False:
                problems(f"{cw}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems(f"{cw}: privileged")
            caps = sc.get("capabilities") or {}
            if caps.get("drop") != ["ALL"]:
                problems(f"{cw}: capabilities.drop is {caps.get('drop')}, not [ALL]")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                problems(f"{cw}: adds capabilities {caps.get('add')}")
            if sc.get("runAsNonRoot") is not True:
                problems(f"{cw}: runAsNonRoot is not true")
            user = sc.get("runAsUser")
            if not (isinstance(user, int) and not isinstance(user, bool) and user > 0):
                problems(f"{cw}: runAsUser is {user!r}, not a non-root uid")
            if sc.get("seccompProfile") != {"type": "RuntimeDefault"}:
                problems(f"{cw}: seccompProfile is {sc.get('seccompProfile')}, not RuntimeDefault")
            if sc.get("procMount", "Default") != "Default":
                problems(f"{cw}: procMount {sc['procMount']}")
            if (sc.get("windowsOptions") or {}).get("hostProcess"):
                problems(f"{cw}: hostProcess")
            for p in c.get("ports") or []:
                if p.get("hostPort"):
                    problems(f"{cw}: hostPort {p['hostPort']}")
            if vs.read_only_root and sc.get("readOnlyRootFilesystem") is not True:
                problems(f"{cw}: readOnlyRootFilesystem is not true")
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(section) or {}):
                        problems(f"{cw}: no resources.{section}.{r}")
        name = component(obj)
        if obj["kind"] == "Deployment" and name in PORTS:
            main = spec["containers"][0]
            if (main.get("securityContext") or {}).get("runAsUser") != IMAGE_USER:
                problems(f"{where}: runs as {(main.get('securityContext') or {}).get('runAsUser')}, not the image's user {IMAGE_USER}")
            probes = {p: main.get(p) for p in ("startupProbe", "livenessProbe", "readinessProbe")}
            want = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
            for p, probe in probes.items():
                get = (probe or {}).get("httpGet") or {}
                path, port = get.get("path"), get.get("port")
                if (path, port) != (want[p], "ops"):
                    problems(f"{where}: {p} is {f'GET {path} on port {port}' if path else 'missing'}, "
                             f"expected GET {want[p]} on port ops")
            delay = int(env_value(main, "SHUTDOWN_DELAY_MS") or 0)
            grace = int(env_value(main, "SHUTDOWN_GRACE_MS") or 10000)
            if spec.get("terminationGracePeriodSeconds", 30) * 1000 <= delay + grace:
                problems(f"{where}: terminationGracePeriodSeconds does not exceed SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS")
            if env_value(main, "PORT") != str(PORTS[name]):
                problems(f"{where}: PORT is {env_value(main, 'PORT')}, the roster says {PORTS[name]}")
            if env_value(main, "OPS_PORT") != str(OPS_PORTS[name]):
                problems(f"{where}: OPS_PORT is {env_value(main, 'OPS_PORT')}, the roster says {OPS_PORTS[name]}")
            for port_name, want_port in (("http", PORTS[name]), ("ops", OPS_PORTS[name])):
                found = [p.get("containerPort") for p in main.get("ports") or [] if p.get("name") == port_name]
                if found != [want_port]:
                    problems(f"{where}: containerPort {port_name} is {found}, the roster says {want_port}")
    if count == 0:
        problems("no pod specs rendered")
    return f"{count} pod specs meet Pod Security 'restricted' and the project's pod rules"


# ------------------------------------------------------------------------ chart invariants
def selector_matches(selector, labels):
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        value, op = labels.get(e["key"]), e["operator"]
        if op == "In" and value not in e["values"]:
            return False
        if op == "NotIn" and value in e["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


HOOK = "pre-install,pre-upgrade"
HOOK_DELETE = "before-hook-creation,hook-succeeded"
# helm's default --timeout: a migration must fail on its own before helm gives up and deletes the
# hook ServiceAccount and Secret its retries need
HELM_TIMEOUT_SECONDS = 300


def secret_names(pod_spec):
    """The Secrets a pod spec reads (env, envFrom, volumes)."""
    names = set()
    for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for e in c.get("envFrom") or []:
            if e.get("secretRef"):
                names.add(e["secretRef"]["name"])
    for v in pod_spec.get("volumes") or []:
        if v.get("secret"):
            names.add(v["secret"]["secretName"])
    return names


def migrations(problems, by_kind, deployed):
    """Every deployed service with a store is migrated exactly once before it starts: by a
    pre-install/pre-upgrade hook Job, or by an init container of its Deployment (the dev infra
    starts with the release, so hooks would run before it). Both run `migrate` with the
    service's own image. A hook runs before the release's ordinary resources exist: it may read
    only Secrets and a ServiceAccount that are hooks themselves (or not the release's)."""
    deployments, jobs = by_kind.get("Deployment", {}), by_kind.get("Job", {})
    hooks = {kind: {n for n, o in by_kind.get(kind, {}).items()
                    if ((o["metadata"].get("annotations") or {}).get("helm.sh/hook") or "") == HOOK}
             for kind in ("Secret", "ServiceAccount")}
    stored = {s["name"] for s in ROSTER if s.get("store")}
    expected_jobs = {f"{RELEASE}-{n}-migrate" for n in stored if n in deployed}
    for name in jobs:
        if name not in expected_jobs:
            problems(f"Job/{name}: not the migration of a deployed roster service with a store")
    for svc in deployed:
        d = deployments.get(f"{RELEASE}-{svc}")
        if not d:
            problems(f"no Deployment/{RELEASE}-{svc}")
            continue
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        job = jobs.get(f"{RELEASE}-{svc}-migrate")
        inits = [c for c in d["spec"]["template"]["spec"].get("initContainers") or [] if c["name"] == "migrate"]
        ways = ([f"Job/{job['metadata']['name']}"] if job else []) + [f"init container of Deployment/{RELEASE}-{svc}"] * len(inits)
        if svc not in stored:
            if ways:
                problems(f"{svc} has no store in the roster but is migrated by {ways}")
            continue
        if len(ways) != 1:
            problems(f"{svc} must be migrated exactly once (hook Job or init container), found {ways or 'none'}")
        for c in inits:
            if c.get("args") != ["migrate"] or c.get("image") != image:
                problems(f"Deployment/{RELEASE}-{svc} init container migrate: args {c.get('args')}, image {c.get('image')}")
        if job:
            where = f"Job/{job['metadata']['name']}"
            annotations = job["metadata"].get("annotations") or {}
            if annotations.get("helm.sh/hook") != HOOK or annotations.get("helm.sh/hook-delete-policy") != HOOK_DELETE:
                problems(f"{where}: annotations {annotations}, expected helm.sh/hook {HOOK} and delete policy {HOOK_DELETE}")
            spec = job["spec"]
            if not 0 < (spec.get("activeDeadlineSeconds") or 0) < HELM_TIMEOUT_SECONDS:
                problems(f"{where}: activeDeadlineSeconds {spec.get('activeDeadlineSeconds')}, expected below helm's "
                         f"default timeout ({HELM_TIMEOUT_SECONDS} s)")
            if spec.get("ttlSecondsAfterFinished") is None:
                problems(f"{where}: no ttlSecondsAfterFinished (helm never deletes a failed hook, not even on uninstall)")
            pod = spec["template"]["spec"]
            c = pod["containers"][0]
            if c.get("args") != ["migrate"] or c.get("image") != image:
                problems(f"{where}: args {c.get('args')}, image {c.get('image')} (expected [migrate] with {image})")
            for secret in sorted(secret_names(pod)):
                if secret in by_kind.get("Secret", {}) and secret not in hooks["Secret"]:
                    problems(f"{where}: reads Secret/{secret}, which the release creates only after its hooks ran")
            account = pod.get("serviceAccountName")
            if account in by_kind.get("ServiceAccount", {}) and account not in hooks["ServiceAccount"]:
                problems(f"{where}: runs as ServiceAccount/{account}, which the release creates only after its hooks ran")


def chart(problems, vs):
    """Invariants of the release: no replicas under an HPA, PDBs only over more than one pod,
    selectors that select, every pod under an Ingress NetworkPolicy (when there are policies),
    Secrets as data, the deployed services and their Service ports as in the roster, the ops port
    scraped by every ServiceMonitor and open to no one without a `from`, migrations."""
    docs = load_docs(vs.file)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind.get("HorizontalPodAutoscaler", {}).values()}
    pdbs = by_kind.get("PodDisruptionBudget", {})
    for name, d in deployments.items():
        hpa = hpas.get(name)
        if hpa and "replicas" in d["spec"]:
            problems(f"Deployment/{name}: sets replicas although an HPA scales it")
        pods_min = hpa["spec"].get("minReplicas", 1) if hpa else d["spec"].get("replicas", 1)
        covered = [p for p in pdbs.values()
                   if selector_matches(p["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        if covered and pods_min <= 1:
            problems(f"Deployment/{name}: PodDisruptionBudget over a single pod")
        if not selector_matches(d["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]):
            problems(f"Deployment/{name}: selector {d['spec']['selector']} does not match its pod labels")
    for name in hpas:
        if name not in deployments:
            problems(f"HPA targets missing Deployment/{name}")
    for name, p in pdbs.items():
        if not any(selector_matches(p["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
                   for d in deployments.values()):
            problems(f"PodDisruptionBudget/{name}: selects no Deployment")
    services = by_kind.get("Service", {})
    for name, s in services.items():
        targets = [d for d in deployments.values()
                   if selector_matches({"matchLabels": s["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])]
        if len(targets) != 1:
            problems(f"Service/{name}: selects {len(targets)} Deployments")
    policies = by_kind.get("NetworkPolicy", {}).values()
    if policies:
        for where, _obj, labels, _spec in pod_specs(docs):
            if not any(selector_matches(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                       for p in policies):
                problems(f"{where}: no NetworkPolicy selects its pods")
    for name, s in by_kind.get("Secret", {}).items():
        if "stringData" in s:
            problems(f"Secret/{name}: uses stringData")

    deployed = vs.deployed()
    rendered = sorted(component(d) for d in deployments.values() if component(d) in PORTS)
    if rendered != sorted(deployed):
        problems(f"service Deployments {rendered}, expected {sorted(deployed)} (the roster minus disabled services)")
    for svc in deployed:
        s = services.get(f"{RELEASE}-{svc}")
        for port_name, want in (("http", PORTS[svc]), ("ops", OPS_PORTS[svc])):
            ports = [p.get("port") for p in (s or {}).get("spec", {}).get("ports", []) if p.get("name") == port_name]
            if ports != [want]:
                problems(f"Service/{RELEASE}-{svc}: {port_name} port {ports}, the roster says {want}")
    for name, m in by_kind.get("ServiceMonitor", {}).items():
        endpoints = [(e.get("port"), e.get("path")) for e in m["spec"].get("endpoints", [])]
        if endpoints != [("ops", "/metrics")]:
            problems(f"ServiceMonitor/{name}: scrapes {endpoints}, expected /metrics on the ops port only")
    # /ready carries dependency errors: the ops port is never open to every source.
    for d in deployments.values():
        if component(d) not in OPS_PORTS:
            continue
        labels = d["spec"]["template"]["metadata"]["labels"]
        ops_port = str(OPS_PORTS[component(d)])
        for p in policies:
            if not selector_matches(p["spec"]["podSelector"], labels):
                continue
            for rule in p["spec"].get("ingress") or []:
                admits_ops = not rule.get("ports") or any(str(x.get("port")) in ("ops", ops_port) for x in rule["ports"])
                if admits_ops and not rule.get("from"):
                    problems(f"NetworkPolicy/{p['metadata']['name']}: opens the ops port of {component(d)} to any source")
    migrations(problems, by_kind, deployed)
    return f"chart invariants hold for {len(deployments)} Deployments, {len(hpas)} HPAs, {len(pdbs)} PDBs"


OPTIONAL_KINDS = ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "NetworkPolicy", "ServiceMonitor",
                  "PrometheusRule", "ConfigMap", "Job")


def covers_kinds(problems, sets):
    kinds = {d["kind"] for vs in sets if vs.file for d in load_docs(vs.file)}
    for kind in OPTIONAL_KINDS:
        if kind not in kinds:
            problems(f"no value set renders a {kind}")
    return f"the value sets render every optional kind ({', '.join(OPTIONAL_KINDS)})"


SCHEMA_ERROR = "values don't meet the specifications of the schema"
MIN_INVALID_FILES = 3


def enough_invalid_files(problems, files):
    if len(files) < MIN_INVALID_FILES:
        problems(f"only {len(files)} files: {[os.path.basename(f) for f in files]}")
    return f"{len(files)} files"


def schema_rejects(problems, helm, kube_version, path):
    """Both `helm lint --strict` and `helm template` (what install renders) refuse the file, and
    for the schema's reason."""
    for verb in (["lint", "--strict", CHART], ["template", RELEASE, CHART]):
        p = run([helm, *verb, "--kube-version", kube_version, "-f", path])
        print(p.stdout + p.stderr)
        if p.returncode == 0:
            problems(f"helm {verb[0]} accepted {path}")
        elif SCHEMA_ERROR not in p.stdout + p.stderr:
            problems(f"helm {verb[0]} refused {path}, but not for the values schema")
    return f"{path} is rejected by the values schema"


# ---------------------------------------------------------------------------------- rules
def rules_from_render(problems, render, out):
    docs = [d for d in load_docs(render) if d["kind"] == "PrometheusRule"]
    if len(docs) != 1:
        problems(f"expected one PrometheusRule, found {len(docs)}")
        return None
    groups = docs[0]["spec"]["groups"]
    for g in groups:
        for r in g["rules"]:
            # The broker's queue metrics (consumer lag) are selected by queue name: RabbitMQ may run elsewhere.
            if 'namespace="' not in r["expr"] and "rabbitmq_" not in r["expr"]:
                problems(f"{r.get('alert') or r.get('record')}: expression not scoped to the release namespace")
    with open(out, "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    print(f"extracted {sum(len(g['rules']) for g in groups)} rules from the PrometheusRule")
    return out


def rendered_rules(problems, promtool, render, rule_tests, work):
    """The PrometheusRule as the chart renders it: promtool check, and the rule unit tests run
    against it (the tests pointed at the rendered rules)."""
    rules = rules_from_render(problems, render, os.path.join(work, "rendered.rules.yaml"))
    if not rules:
        return None
    command(problems, [promtool, "check", "rules", rules])
    tests = load_yaml(rule_tests)
    tests["rule_files"] = [rules]
    tests_out = os.path.join(work, "rendered.rules.test.yaml")
    with open(tests_out, "w") as f:
        yaml.safe_dump(tests, f, sort_keys=False)
    command(problems, [promtool, "test", "rules", tests_out])
    return "the rendered PrometheusRule passes promtool check and the rule unit tests"


def prometheus_config(problems, promtool, rules, work):
    with open(os.path.join(ROOT, "deploy/prometheus/prometheus.yml")) as f:
        config = f.read().replace("/etc/prometheus/rules/*.rules.yaml", os.path.join(ROOT, rules))
    out = os.path.join(work, "prometheus.yml")
    with open(out, "w") as f:
        f.write(config)
    command(problems, [promtool, "check", "config", out])


# ----------------------------------------------------------------------------- dashboards
def known_metrics():
    """The metric catalogue docs/metrics.md (checked against the services' /metrics by
    test/observability), plus the prom-client defaults and Prometheus' own `up`."""
    with open(os.path.join(ROOT, "docs/metrics.md")) as f:
        names = set(re.findall(r"^\| `([a-z_:]+)` \|", f.read(), re.M))
    return names | {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
                     "nodejs_heap_size_used_bytes", "nodejs_heap_size_total_bytes", "up"}


def dashboards(problems, promtool, directory, work):
    """charts/parley/dashboards/*.json: valid JSON, unique uids, the data source variable, and
    every query parses as PromQL (promtool, as recording rules) and names only known metrics."""
    grafana_vars = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m",
                    "$namespace": ".*", "$service": "|".join(s["name"] for s in ROSTER)}
    files = sorted(glob.glob(os.path.join(ROOT, directory, "*.json")))
    if not files:
        problems(f"no dashboards in {directory}")
    uids, exprs, known = {}, [], known_metrics()
    for path in files:
        name = os.path.basename(path)
        try:
            with open(path) as f:
                d = json.load(f)
        except ValueError as e:
            problems(f"{name}: invalid JSON: {e}")
            continue
        for key in ("uid", "title", "panels", "templating"):
            if key not in d:
                problems(f"{name}: no {key}")
        if d.get("uid") in uids:
            problems(f"{name}: uid {d['uid']} also used by {uids[d['uid']]}")
        uids[d.get("uid")] = name
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        if variables.get("datasource", {}).get("type") != "datasource":
            problems(f"{name}: no `datasource` variable (needed to work with any Prometheus data source)")
        ids = set()
        for p in d.get("panels", []):
            if p["id"] in ids:
                problems(f"{name}: duplicate panel id {p['id']}")
            ids.add(p["id"])
            if p["type"] == "row":
                continue
            if (p.get("datasource") or {}).get("uid") != "${datasource}":
                problems(f"{name} panel {p['title']!r}: data source is not ${{datasource}}")
            for t in p.get("targets", []):
                exprs.append((f"{name} / {p['title']}", t["expr"]))
    rules = []
    for i, (where, expr) in enumerate(exprs):
        promql = expr
        for var, value in sorted(grafana_vars.items(), key=lambda kv: -len(kv[0])):
            promql = promql.replace(var, value)
        if "$" in promql.replace("${1}", ""):
            problems(f"{where}: unknown Grafana variable in {expr}")
        for metric in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", promql):
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            if metric not in known and base not in known:
                problems(f"{where}: unknown metric {metric}")
        rules.append({"record": f"dashboard:query:{i}", "expr": promql})
    out = os.path.join(work, "dashboards.rules.yaml")
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f, sort_keys=False)
    command(problems, [promtool, "check", "rules", out], "promtool check rules (the dashboard queries)")
    return f"{len(files)} dashboards, {len(exprs)} queries checked"


# -------------------------------------------------------------------------------- compose
def json_schema(problems, document, schema_path, label):
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.validators.validator_for(schema)(schema)
    for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))):
        problems(f"{label} {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}")


def build_args(args):
    """Compose build args as a dict (the spec allows a mapping or a list of NAME=value)."""
    if isinstance(args, list):
        return dict(str(a).split("=", 1) if "=" in str(a) else (str(a), None) for a in args)
    return {k: None if v is None else str(v) for k, v in (args or {}).items()}


def compose(problems, path, schema_path):
    """docker-compose.yml: the Compose Specification schema, then the project's rules: ports
    published on 127.0.0.1 only and only the expected ones, every roster service built from the one
    Dockerfile with its SERVICE/PORT, migrations before the services that have a store, healthy
    infrastructure first, files that exist."""
    doc = load_yaml(path)
    json_schema(problems, doc, schema_path, f"{path} schema:")
    services = doc.get("services", {})
    allowed = {("127.0.0.1", PORTS["gateway"]): "gateway", ("127.0.0.1", 3000): "grafana", ("127.0.0.1", 8025): "mailpit",
               ("127.0.0.1", 15672): "rabbitmq", ("127.0.0.1", 9090): "prometheus",
               # the presigned attachment URLs point at the S3 server: clients must reach it
               ("127.0.0.1", 7070): "s3"}
    published = {}
    for name, s in services.items():
        for p in s.get("ports", []) or []:
            if isinstance(p, dict):
                host_ip, port = p.get("host_ip"), int(p.get("published"))
            else:
                parts = str(p).split(":")
                if len(parts) != 3:
                    problems(f"{name}: port {p} is not bound to an explicit host address")
                    continue
                host_ip, port = parts[0], int(parts[1])
            published[(host_ip, port)] = name
            if allowed.get((host_ip, port)) != name:
                problems(f"{name}: publishes {host_ip}:{port}, which is not in the allowed set")
        for dep in s.get("depends_on") or {}:
            if dep not in services:
                problems(f"{name}: depends on unknown service {dep}")
        for v in s.get("volumes", []) or []:
            source = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if source.startswith("./") and not os.path.exists(os.path.join(ROOT, source)):
                problems(f"{name}: mounts missing {source}")
        build = s.get("build")
        if build is not None:
            if not isinstance(build, dict) or build.get("context") != "." or build.get("dockerfile") != DOCKERFILE:
                problems(f"{name}: build is {build}, expected context . and dockerfile {DOCKERFILE}")
    for port, name in allowed.items():
        if published.get(port) != name:
            problems(f"{name} does not publish {port[0]}:{port[1]}")
    for entry in ROSTER:
        svc, port = entry["name"], str(entry["port"])
        s = services.get(svc)
        if not s:
            problems(f"no {svc} service (it is in {ROSTER_FILE})")
            continue
        args = build_args((s.get("build") or {}).get("args"))
        if args.get("SERVICE") != svc or args.get("PORT") != port:
            problems(f"{svc}: build args SERVICE={args.get('SERVICE')} PORT={args.get('PORT')}, the roster says "
                     f"SERVICE={svc} PORT={port}")
        env_port = (s.get("environment") or {}).get("PORT")
        if env_port is not None and str(env_port) != port:
            problems(f"{svc}: environment PORT {env_port}, the roster says {port}")
        migrate = services.get(f"migrate-{svc}")
        if entry.get("store"):
            if not migrate or migrate.get("command") != ["migrate"]:
                problems(f"no migrate-{svc} one-shot service running `migrate` ({svc} has a store)")
            elif (s.get("depends_on") or {}).get(f"migrate-{svc}", {}).get("condition") != "service_completed_successfully":
                problems(f"{svc} does not wait for migrate-{svc} to complete")
            elif migrate.get("image") != s.get("image") or migrate.get("build") != s.get("build"):
                problems(f"migrate-{svc} does not build and run the {svc} image")
        elif migrate:
            problems(f"migrate-{svc}: {svc} has no store in the roster")
        for dep, cond in (s.get("depends_on") or {}).items():
            if dep in INFRA and cond.get("condition") != "service_healthy":
                problems(f"{svc}: does not wait for {dep} to be healthy")
    for infra in (*INFRA, "prometheus", "grafana"):
        if not (services.get(infra) or {}).get("healthcheck"):
            problems(f"{infra}: no healthcheck")
    return f"{path}: {len(services)} services valid"


# ------------------------------------------------------------------------------- skaffold
def sanitize(name):
    return re.sub(r"[/\-.:]", "_", name)


ARTIFACT_PATH = re.compile(r"^/build/artifacts/(\d+)(/.*)?$")


def services_named(value):
    """The service folders a patch value names (services/<name>/...)."""
    if isinstance(value, dict):
        return {n for v in value.values() for n in services_named(v)}
    if isinstance(value, list):
        return {n for v in value for n in services_named(v)}
    return set(re.findall(r"services/([^/*]+)/", value)) if isinstance(value, str) else set()


def skaffold(problems, path, schema_path):
    """skaffold.yaml: the schema of its apiVersion, then: one artifact per roster service in
    roster order, each built from the one Dockerfile with the roster's SERVICE/PORT; profiles
    patch those artifacts instead of repeating them, and every patch that addresses an artifact
    by index (/build/artifacts/<i>/...) lands on the artifact of roster[i], is guarded by a `test`
    of that artifact's image, and names no other service; the helm release gets every image."""
    doc = load_yaml(path)
    json_schema(problems, doc, schema_path, f"{path} schema:")
    with open(os.path.join(ROOT, DOCKERFILE)) as f:
        stages = re.findall(r"^FROM \S+ AS (\S+)$", f.read(), re.M | re.I)
    artifacts = (doc.get("build") or {}).get("artifacts") or []
    images = [a.get("image") for a in artifacts]
    expected = [f"parley-{s['name']}" for s in ROSTER]
    if images != expected:
        problems(f"{path}: build.artifacts are {images}; they must be {expected}, the order of {ROSTER_FILE}, "
                 "because profile patches address them by index")
    for i, a in enumerate(artifacts):
        entry = ROSTER[i] if i < len(ROSTER) else None
        docker = a.get("docker") or {}
        where = f"{path}: build.artifacts[{i}] ({a.get('image')})"
        if a.get("context") != ".":
            problems(f"{where}: context is not '.' (the repository root)")
        if docker.get("dockerfile") != DOCKERFILE:
            problems(f"{where}: dockerfile {docker.get('dockerfile')}, expected {DOCKERFILE}")
        if docker.get("target") not in (None, "runtime"):
            problems(f"{where}: target {docker.get('target')}; the production build is the runtime stage")
        args = docker.get("buildArgs") or {}
        if entry and (args.get("SERVICE") != entry["name"] or args.get("PORT") != str(entry["port"])):
            problems(f"{where}: buildArgs SERVICE={args.get('SERVICE')} PORT={args.get('PORT')}, the roster says "
                     f"SERVICE={entry['name']} PORT={entry['port']}")

    profiles = doc.get("profiles") or []
    for p in profiles:
        name = p["name"]
        if (p.get("build") or {}).get("artifacts"):
            problems(f"{path}: profile {name} repeats build.artifacts; change them with `patches` instead")
        guarded = set()
        for n, patch in enumerate(p.get("patches") or []):
            op = patch.get("op", "replace")
            for field in ("path", "from"):
                m = ARTIFACT_PATH.match(patch.get(field) or "")
                if not m:
                    continue
                i, rest = int(m.group(1)), m.group(2) or ""
                where = f"{path}: profile {name} patch {n} ({op} {patch.get(field)})"
                if i >= len(ROSTER) or i >= len(artifacts):
                    problems(f"{where}: there is no artifact {i}")
                    continue
                want = f"parley-{ROSTER[i]['name']}"
                if artifacts[i].get("image") != want:
                    problems(f"{where}: artifact {i} is {artifacts[i].get('image')}, but roster[{i}] is "
                             f"{ROSTER[i]['name']}: the patch would change the wrong service")
                if op == "test" and rest == "/image" and field == "path":
                    if patch.get("value") != want:
                        problems(f"{where}: tests for image {patch.get('value')}, roster[{i}] is {want}")
                    guarded.add(i)
                    continue
                if i not in guarded:
                    problems(f"{where}: not preceded by `{{op: test, path: /build/artifacts/{i}/image, value: {want}}}`, "
                             f"which makes skaffold refuse the patch if artifact {i} is another service")
                if op in ("remove", "move") and rest == "":
                    problems(f"{where}: removes an artifact, which shifts the index of every later one")
                others = services_named(patch.get("value")) - {ROSTER[i]["name"]}
                if others:
                    named = ", ".join(f"services/{o}/" for o in sorted(others))
                    problems(f"{where}: the value names {named} on the artifact of {ROSTER[i]['name']}")
                if rest == "/docker/target" and patch.get("value") not in stages:
                    problems(f"{where}: target {patch.get('value')} is no stage of {DOCKERFILE} ({stages})")
    dev = next((p for p in profiles if p["name"] == "dev"), None)
    if not dev:
        problems(f"{path}: no `dev` profile")
    else:
        patched = {(m.group(1), m.group(2)): patch.get("value")
                   for patch in dev.get("patches") or [] if (m := ARTIFACT_PATH.match(patch.get("path") or ""))}
        for i, entry in enumerate(ROSTER):
            svc = entry["name"]
            if patched.get((str(i), "/docker/target")) != "dev":
                problems(f"{path}: profile dev does not set docker.target dev on artifact {i} ({svc})")
            srcs = [r.get("src") for r in (patched.get((str(i), "/sync")) or {}).get("manual", [])]
            if sorted(srcs) != sorted([f"services/{svc}/src/**/*.ts", "packages/*/src/**/*.ts"]):
                problems(f"{path}: profile dev syncs {srcs} into artifact {i} ({svc})")

    releases = doc["deploy"]["helm"]["releases"]
    for r in releases:
        if not os.path.isdir(os.path.join(ROOT, r["chartPath"])):
            problems(f"release {r['name']}: chartPath {r['chartPath']} missing")
        for v in r.get("valuesFiles", []):
            if not os.path.exists(os.path.join(ROOT, v)):
                problems(f"release {r['name']}: values file {v} missing")
        templates = r.get("setValueTemplates", {})
        for entry in ROSTER:
            svc, s = entry["name"], sanitize(f"parley-{entry['name']}")
            want = {f"services.{svc}.image.repository": f"{{{{.IMAGE_REPO_{s}}}}}",
                    f"services.{svc}.image.tag": f"{{{{.IMAGE_TAG_{s}}}}}@{{{{.IMAGE_DIGEST_{s}}}}}"}
            for key, value in want.items():
                if templates.get(key) != value:
                    problems(f"release {r['name']}: setValueTemplates[{key}] is {templates.get(key)!r}, expected {value!r}")
        if str((r.get("setValues") or {}).get("infra.enabled")).lower() != "true":
            problems(f"release {r['name']}: infra.enabled is not set to true")
    forwards = {(f.get("resourceName"), f.get("localPort")) for f in doc.get("portForward", [])}
    if (f"{RELEASE}-gateway", PORTS["gateway"]) not in forwards:
        problems(f"no port-forward of the gateway on {PORTS['gateway']}")
    if not any("grafana" in (name or "") for name, _ in forwards):
        problems("no port-forward of Grafana")
    return f"{path} valid"


def skaffold_cli(problems, skaffold_bin, helm, profile):
    """skaffold itself, offline: `skaffold diagnose --yaml-only` (parses skaffold.yaml, applies the
    profile's patches) and `skaffold render --offline` through its helm deployer with a fixed tag.
    A full `skaffold diagnose` reads the Dockerfile's base images from a registry or a Docker
    daemon, so it cannot run offline. Checks that the dev profile builds the `dev` stage of every
    artifact and that every container of every service (migrations included) gets its image."""
    env = {**os.environ, "PATH": f"{os.path.dirname(helm)}:{os.environ.get('PATH', '')}",
           "SKAFFOLD_UPDATE_CHECK": "false", "SKAFFOLD_INTERACTIVE": "false"}
    args = ["-p", profile] if profile else []
    p = run([skaffold_bin, "diagnose", "--yaml-only", *args], env=env, timeout=300)
    print(p.stderr)
    if p.returncode != 0:
        problems(f"skaffold diagnose --yaml-only {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
        return None
    effective = yaml.safe_load(p.stdout) or {}
    targets = [(a.get("docker") or {}).get("target") for a in (effective.get("build") or {}).get("artifacts") or []]
    want = "dev" if profile == "dev" else None
    if targets != [want] * len(ROSTER):
        problems(f"skaffold's effective config ({profile or 'no profile'}) builds the targets {targets}, expected {want} for each service")
    tag = "validate-deploy"
    p = run([skaffold_bin, "render", "--offline=true", "--digest-source=tag", f"--tag={tag}", *args], env=env, timeout=300)
    print(p.stderr)
    if p.returncode != 0:
        problems(f"skaffold render --offline {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
        return None
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
    for entry in ROSTER:
        d = deployments.get(f"{RELEASE}-{entry['name']}")
        if not d:
            problems(f"skaffold render {' '.join(args)}: no Deployment {RELEASE}-{entry['name']}")
            continue
        spec = d["spec"]["template"]["spec"]
        images = {c["image"] for c in spec.get("containers", []) + spec.get("initContainers", [])}
        if images != {f"parley-{entry['name']}:{tag}"}:
            problems(f"skaffold render {' '.join(args)}: {d['metadata']['name']} runs {sorted(images)}, "
                     f"expected parley-{entry['name']}:{tag}")
    return f"skaffold {run([skaffold_bin, 'version']).stdout.strip()}: diagnose + render of {len(docs)} objects"


# ----------------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--helm", required=True)
    parser.add_argument("--kubeconform", required=True)
    parser.add_argument("--promtool", default="promtool")
    parser.add_argument("--skaffold", required=True)
    parser.add_argument("--roster", required=True, help=f"JSON of ROSTER ({ROSTER_FILE})")
    parser.add_argument("--schemas", default=os.path.join(ROOT, "deploy/schemas"))
    parser.add_argument("--cache", default=os.path.join(ROOT, ".cache"))
    parser.add_argument("--kube-version", default="1.36.0")
    opts = parser.parse_args()

    with open(opts.roster) as f:
        ROSTER.extend(json.load(f))
    PORTS.update({s["name"]: s["port"] for s in ROSTER})
    OPS_PORTS.update({s["name"]: s["opsPort"] for s in ROSTER})
    if not ROSTER:
        sys.exit(f"empty roster in {opts.roster}")
    helm, kube = opts.helm, opts.kube_version

    work = tempfile.mkdtemp(prefix="validate-deploy.")
    swaggers = sorted(glob.glob(os.path.join(opts.schemas, "kubernetes-*-swagger.json")))
    if not swaggers:
        sys.exit(f"no kubernetes-*-swagger.json in {opts.schemas}")
    k8s_dir = os.path.join(opts.cache, "kubeconform-schemas", f"v{kube}")

    check(f"roster ({ROSTER_FILE}) <-> services/, {DOCKERFILE}", roster_and_dockerfile)
    check(f"kubernetes {kube} JSON schemas generated", k8s_schemas, swaggers[0], k8s_dir)

    # --------------------------------------------------------------------------- the chart
    sets = value_sets()
    for vs in sets:
        check(f"helm lint --strict ({vs.name})", command, [helm, "lint", "--strict", CHART, "--kube-version", kube, *vs.args])
        p = run([helm, "template", RELEASE, CHART, "-n", NAMESPACE, "--kube-version", kube, *MONITORING_APIS, *vs.args])
        if p.returncode != 0:
            RESULTS.append(("FAIL", f"helm template ({vs.name})"))
            print(f"\n---- FAIL: helm template ({vs.name}) ----\n{p.stderr}", file=sys.stderr)
            continue
        RESULTS.append(("PASS", f"helm template ({vs.name})"))
        vs.file = os.path.join(work, f"render-{vs.name}.yaml")
        with open(vs.file, "w") as f:
            f.write(p.stdout)
        check(f"kubeconform -strict ({vs.name})", command, [
            opts.kubeconform, "-strict", "-summary", "-output", "text", "-kubernetes-version", kube,
            "-schema-location", os.path.join(k8s_dir, "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
            "-schema-location", os.path.join(opts.schemas, "crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"),
            vs.file])
        check(f"pod security restricted + pod rules ({vs.name})", pods, vs)
        check(f"chart invariants ({vs.name})", chart, vs)
    check("value sets cover every optional resource", covers_kinds, sets)

    invalid = sorted(glob.glob(os.path.join(ROOT, CHART, "ci/invalid/*.yaml")))
    check(f"{CHART}/ci/invalid holds at least {MIN_INVALID_FILES} files", enough_invalid_files, invalid)
    for path in invalid:
        check(f"schema rejects {os.path.basename(path)}", schema_rejects, helm, kube, rel(path))

    # ---------------------------------------------------------------------------- rules
    rules, rule_tests = f"{CHART}/rules/parley.rules.yaml", f"{CHART}/rules/parley.rules.test.yaml"
    check(f"promtool check rules ({rel(rules)})", command, [opts.promtool, "check", "rules", rules])
    check(f"promtool test rules ({rel(rule_tests)})", command, [opts.promtool, "test", "rules", rule_tests])
    full = next((vs for vs in sets if vs.name == "full"), None)
    if full and full.file:
        check("PrometheusRule as rendered: promtool check + test", rendered_rules, opts.promtool, full.file, rule_tests, work)
    else:
        RESULTS.append(("FAIL", "PrometheusRule as rendered: promtool check + test (the full render failed)"))
    check("promtool check config (deploy/prometheus/prometheus.yml)", prometheus_config, opts.promtool, rules, work)
    check("grafana dashboards (JSON, variables, PromQL, metric names)", dashboards, opts.promtool, f"{CHART}/dashboards", work)

    # ------------------------------------------------------------------- compose, skaffold
    check("docker-compose.yml (compose-spec schema + project rules)", compose, "docker-compose.yml",
          os.path.join(opts.schemas, "compose/compose-spec.json"))
    api = (load_yaml("skaffold.yaml") or {}).get("apiVersion", "")
    version = api.split("/")[-1]
    # the schema of the apiVersion skaffold.yaml declares; a version with no vendored schema fails
    check(f"skaffold.yaml ({api} schema + roster wiring)", skaffold, "skaffold.yaml",
          os.path.join(opts.schemas, "skaffold", f"{version}.json"))
    for profile in (None, "dev"):
        check(f"skaffold diagnose + render --offline ({'profile ' + profile if profile else 'no profile'})",
              skaffold_cli, opts.skaffold, helm, profile)

    # -------------------------------------------------------------------------- summary
    shutil.rmtree(work, ignore_errors=True)
    failed = [name for status, name in RESULTS if status == "FAIL"]
    print(f"\nvalidate-deploy summary (helm {run([helm, 'version', '--template', '{{.Version}}']).stdout.strip()}, "
          f"kubeconform {run([opts.kubeconform, '-v']).stdout.strip()}, Kubernetes {kube}):")
    for status, name in RESULTS:
        print(f"  {status}  {name}")
    if failed:
        print(f"{len(failed)} check(s) failed")
        sys.exit(1)
    print(f"all {len(RESULTS)} checks passed")


if __name__ == "__main__":
    main()
