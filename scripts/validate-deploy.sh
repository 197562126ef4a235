#!/usr/bin/env bash
# Validates everything that deploys Parley, offline, and prints a summary; exits non-zero if any
# check fails.
#
#   bash scripts/validate-deploy.sh
#
# Checks:
#   chart      `helm lint --strict` and `helm template` of charts/parley with several value sets
#              (defaults, charts/parley/ci/*-values.yaml, k8s/dev/values.yaml); every render
#              validated by `kubeconform -strict` against the Kubernetes OpenAPI schema and the
#              Prometheus-operator CRD schemas; every pod checked against Pod Security "restricted"
#              plus the project's rules (requests and limits, no service-account token, probes,
#              termination grace above the shutdown delay + grace); chart invariants (no replicas
#              under an HPA, PDBs only over more than one pod, every pod under a NetworkPolicy).
#   schema     every charts/parley/ci/invalid/*.yaml (typos, wrong types) MUST fail values.schema.json.
#   rules      `promtool check rules` + `promtool test rules` on charts/parley/rules (and on the
#              rules as the chart's PrometheusRule renders them); `promtool check config` on
#              deploy/prometheus/prometheus.yml.
#   dashboards charts/parley/dashboards/*.json: valid JSON, unique uids, data source variable,
#              every query parses as PromQL and names only metrics the services export.
#   compose    docker-compose.yml against the Compose Specification schema, plus the project's
#              rules (published ports, migrations before services, files that exist).
#   skaffold   skaffold.yaml against the schema of its apiVersion, plus artifact <-> chart wiring.
#
# Tools (installed when missing, idempotent, bounded by PARLEY_TOOL_TIMEOUT):
#   .cache/bin/helm         helm.sh/helm/v3 (go install; falls back to the module source + go build)
#   .cache/bin/kubeconform  github.com/yannh/kubeconform
#   Go                      scripts/lib.sh go_bin (Debian's golang-go fetches a newer toolchain)
#   promtool                Debian package `prometheus`
#   python3 with PyYAML + jsonschema: Debian packages (as root), else a venv in .cache/venv-deploy
#
# Environment (defaults in brackets):
#   PARLEY_SCHEMAS_DIR [deploy/schemas]   offline schemas (kubernetes-*-swagger.json, crds/, skaffold/,
#                                         compose/; see deploy/schemas/README.md)
#   PARLEY_KUBE_VERSION [1.36.0]  PARLEY_HELM_VERSION [v3.22.0]  PARLEY_KUBECONFORM_VERSION [v0.8.0]
#   PARLEY_CACHE_DIR [.cache]  PARLEY_TOOL_TIMEOUT [1200] seconds per tool build
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
CACHE=$(mkdir -p "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && cd "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && pwd -P)
BIN=$CACHE/bin
SCHEMAS=${PARLEY_SCHEMAS_DIR:-$ROOT/deploy/schemas}
KUBE_VERSION=${PARLEY_KUBE_VERSION:-1.36.0}
HELM_VERSION=${PARLEY_HELM_VERSION:-v3.22.0}
KUBECONFORM_VERSION=${PARLEY_KUBECONFORM_VERSION:-v0.8.0}
TOOL_TIMEOUT=${PARLEY_TOOL_TIMEOUT:-1200}
CHART=charts/parley
RELEASE=parley
NAMESPACE=parley

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PATH=$BIN:$PATH

LOG_TAG=validate-deploy
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

RESULTS=()
FAILED=0
# check NAME COMMAND...: runs one check, keeps its output in $WORK/logs, records PASS/FAIL.
check() {
  local name=$1
  shift
  local logfile
  logfile=$WORK/logs/$(tr -c 'A-Za-z0-9._-' '_' <<<"$name").log
  mkdir -p "$WORK/logs"
  if "$@" >"$logfile" 2>&1; then
    RESULTS+=("PASS  $name")
  else
    RESULTS+=("FAIL  $name")
    FAILED=$((FAILED + 1))
    printf '\n---- FAIL: %s ----\n' "$name" >&2
    tail -n 40 "$logfile" >&2
  fi
}

# ------------------------------------------------------------------------------------- tools

# install_go_tool NAME MODULE VERSION PACKAGE LDFLAGS
install_go_tool() {
  local name=$1 module=$2 version=$3 pkg=$4 ldflags=$5 go src
  go=$(go_bin)
  mkdir -p "$BIN"
  log "installing $name $version into $BIN (go install, up to ${TOOL_TIMEOUT}s)"
  if GOBIN=$BIN GOTOOLCHAIN=auto timeout "$TOOL_TIMEOUT" "$go" install -trimpath -ldflags "$ldflags" \
    "$module/$pkg@$version" >"$WORK/install-$name.log" 2>&1; then
    return 0
  fi
  # `go install m@v` can fail where the proxy refuses the @v/list lookup; the module of an exact
  # version still downloads, and building inside it resolves dependencies by exact version.
  log "go install failed ($(tail -n 1 "$WORK/install-$name.log" 2>/dev/null)); building from the module source"
  src=$(go_module_dir "$module@$version")
  (cd "$src" && GOFLAGS=-mod=mod GOTOOLCHAIN=auto timeout "$TOOL_TIMEOUT" "$go" build -trimpath -ldflags "$ldflags" \
    -o "$BIN/$name" "./$pkg")
}

ensure_helm() {
  if [[ -x $BIN/helm ]] && [[ $("$BIN/helm" version --template '{{.Version}}' 2>/dev/null) == "$HELM_VERSION" ]]; then
    return 0
  fi
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  # Like helm's Makefile: the default Kubernetes version of `helm template` follows client-go.
  local client_go
  client_go=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' \
    "$(go_module_dir "helm.sh/helm/v3@$HELM_VERSION")/go.mod" | head -n 1) || true
  if [[ -n $client_go ]]; then
    local pkg
    for pkg in pkg/chartutil pkg/lint/rules; do
      ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$client_go"
    done
  fi
  install_go_tool helm helm.sh/helm/v3 "$HELM_VERSION" cmd/helm "$ldflags"
  [[ $("$BIN/helm" version --template '{{.Version}}') == "$HELM_VERSION" ]] || die "installed helm is not $HELM_VERSION"
}

ensure_kubeconform() {
  if [[ -x $BIN/kubeconform ]] && [[ $("$BIN/kubeconform" -v 2>/dev/null) == "$KUBECONFORM_VERSION" ]]; then
    return 0
  fi
  install_go_tool kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION" cmd/kubeconform \
    "-s -w -X main.version=$KUBECONFORM_VERSION"
  [[ $("$BIN/kubeconform" -v) == "$KUBECONFORM_VERSION" ]] || die "installed kubeconform is not $KUBECONFORM_VERSION"
}

PYTHON=python3
ensure_python() {
  need_tools python3:python3
  if python3 -c 'import yaml, jsonschema' 2>/dev/null; then
    return 0
  fi
  if is_root && command -v apt-get >/dev/null; then
    apt_install python3-yaml python3-jsonschema
    return 0
  fi
  local venv=$CACHE/venv-deploy
  if ! "$venv/bin/python" -c 'import yaml, jsonschema' 2>/dev/null; then
    log "installing PyYAML and jsonschema into $venv"
    python3 -m venv "$venv"
    timeout "$TOOL_TIMEOUT" "$venv/bin/pip" install --quiet --disable-pip-version-check 'PyYAML==6.0.2' 'jsonschema==4.23.0'
  fi
  PYTHON=$venv/bin/python
}

[[ -d $SCHEMAS ]] || die "offline schemas not found in $SCHEMAS (set PARLEY_SCHEMAS_DIR)"
shopt -s nullglob
swaggers=("$SCHEMAS"/kubernetes-*-swagger.json)
shopt -u nullglob
((${#swaggers[@]} > 0)) || die "no kubernetes-*-swagger.json in $SCHEMAS"
SWAGGER=${swaggers[0]}
need_tools promtool:prometheus
ensure_helm
ensure_kubeconform
ensure_python
HELM=$BIN/helm
KUBECONFORM=$BIN/kubeconform
log "helm $("$HELM" version --template '{{.Version}}'), kubeconform $("$KUBECONFORM" -v), $(promtool --version 2>&1 | head -n 1)"

# -------------------------------------------------------------------- the python checks
CHECKS=$WORK/checks.py
cat >"$CHECKS" <<'PY'
"""Checks of scripts/validate-deploy.sh: python3 checks.py <command> [args]."""
import glob, hashlib, json, os, re, sys

import jsonschema
import yaml

SERVICES = ["gateway", "auth", "user", "chat", "notification"]
PORTS = {"gateway": 4000, "user": 4001, "chat": 4002, "auth": 4003, "notification": 4004}
problems = []


def fail(msg):
    problems.append(msg)


def finish(ok_message):
    if problems:
        for p in problems:
            print("  -", p)
        print(f"{len(problems)} problem(s)")
        sys.exit(1)
    print(ok_message)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# ---------------------------------------------------------------- kubeconform schemas
def k8s_schemas(swagger_path, out_dir):
    """One JSON schema per kind ({kind}-{group}-{version}.json, kubeconform's layout), each a $ref
    into _definitions.json: the OpenAPI definitions made strict (no unknown fields), with
    IntOrString and Quantity accepting numbers as the API server does."""
    raw = open(swagger_path, "rb").read()
    stamp = os.path.join(out_dir, ".source-sha256")
    digest = hashlib.sha256(raw + b"strict-v1").hexdigest()
    if os.path.exists(stamp) and open(stamp).read() == digest:
        print(f"schemas up to date in {out_dir}")
        return
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
    open(stamp, "w").write(digest)
    print(f"wrote {count} kind schemas to {out_dir}")


# ------------------------------------------------------------------------ pod checks
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}


def pod_specs(docs):
    for d in docs:
        kind, spec = d.get("kind"), d.get("spec") or {}
        where = f"{kind}/{d['metadata']['name']}"
        if kind == "Pod":
            yield where, d, spec
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield where, d, spec["template"]["spec"]
        elif kind == "CronJob":
            yield where, d, spec["jobTemplate"]["spec"]["template"]["spec"]


def env_value(container, name):
    for e in container.get("env") or []:
        if e["name"] == name and "value" in e:
            return e["value"]
    return None


def pods(path, read_only_root):
    docs = load_docs(path)
    count = 0
    for where, obj, spec in pod_specs(docs):
        count += 1
        psc = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag) is True:
                fail(f"{where}: {flag} is true")
        if spec.get("automountServiceAccountToken") is not False:
            fail(f"{where}: automountServiceAccountToken is not false")
        for v in spec.get("volumes") or []:
            types = set(v) - {"name"}
            if not types <= ALLOWED_VOLUMES:
                fail(f"{where}: volume {v['name']} uses {sorted(types - ALLOWED_VOLUMES)}")
        if psc.get("sysctls"):
            fail(f"{where}: pod sysctls are set")
        containers = [("container", c) for c in spec.get("containers") or []] + \
                     [("initContainer", c) for c in spec.get("initContainers") or []]
        for label, c in containers:
            cw = f"{where} {label} {c['name']}"
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{cw}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                fail(f"{cw}: privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                fail(f"{cw}: capabilities do not drop ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                fail(f"{cw}: adds capabilities {caps.get('add')}")
            if not (sc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)):
                fail(f"{cw}: runAsNonRoot is not true")
            for ctx in (psc, sc):
                if ctx.get("runAsUser") == 0:
                    fail(f"{cw}: runAsUser 0")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                fail(f"{cw}: seccompProfile is {seccomp!r}, not RuntimeDefault/Localhost")
            if sc.get("procMount", "Default") != "Default":
                fail(f"{cw}: procMount {sc['procMount']}")
            if (sc.get("windowsOptions") or {}).get("hostProcess"):
                fail(f"{cw}: hostProcess")
            for p in c.get("ports") or []:
                if p.get("hostPort"):
                    fail(f"{cw}: hostPort {p['hostPort']}")
            if read_only_root and sc.get("readOnlyRootFilesystem") is not True:
                fail(f"{cw}: readOnlyRootFilesystem is not true")
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(section) or {}):
                        fail(f"{cw}: no resources.{section}.{r}")
        component = ((obj.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
        if obj["kind"] == "Deployment" and component in SERVICES:
            main = spec["containers"][0]
            probes = {p: main.get(p) for p in ("startupProbe", "livenessProbe", "readinessProbe")}
            for p, probe in probes.items():
                if not probe:
                    fail(f"{where}: no {p}")
            if (probes["livenessProbe"] or {}).get("httpGet", {}).get("path") != "/health":
                fail(f"{where}: liveness is not GET /health")
            if (probes["readinessProbe"] or {}).get("httpGet", {}).get("path") != "/ready":
                fail(f"{where}: readiness is not GET /ready")
            delay = int(env_value(main, "SHUTDOWN_DELAY_MS") or 0)
            grace = int(env_value(main, "SHUTDOWN_GRACE_MS") or 10000)
            if spec.get("terminationGracePeriodSeconds", 30) * 1000 <= delay + grace:
                fail(f"{where}: terminationGracePeriodSeconds does not exceed SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS")
            if env_value(main, "PORT") != str(PORTS[component]):
                fail(f"{where}: PORT is {env_value(main, 'PORT')}, expected {PORTS[component]}")
    if count == 0:
        fail("no pod specs rendered")
    finish(f"{count} pod specs meet Pod Security 'restricted' and the project's pod rules")


# -------------------------------------------------------------------- chart invariants
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


def chart(path):
    docs = load_docs(path)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind.get("HorizontalPodAutoscaler", {}).values()}
    pdbs = by_kind.get("PodDisruptionBudget", {})
    for name, d in deployments.items():
        hpa = hpas.get(name)
        if hpa and "replicas" in d["spec"]:
            fail(f"Deployment/{name}: sets replicas although an HPA scales it")
        pods_min = hpa["spec"]["minReplicas"] if hpa else d["spec"].get("replicas", 1)
        covered = [p for p in pdbs.values()
                   if selector_matches(p["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        if covered and pods_min <= 1:
            fail(f"Deployment/{name}: PodDisruptionBudget over a single pod")
        sel = d["spec"]["selector"]["matchLabels"]
        if not selector_matches(d["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]):
            fail(f"Deployment/{name}: selector {sel} does not match its pod labels")
    for name, h in hpas.items():
        if name not in deployments:
            fail(f"HPA targets missing Deployment/{name}")
    services = by_kind.get("Service", {})
    for name, s in services.items():
        targets = [d for d in deployments.values()
                   if selector_matches({"matchLabels": s["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])]
        if len(targets) != 1:
            fail(f"Service/{name}: selects {len(targets)} Deployments")
    policies = by_kind.get("NetworkPolicy", {}).values()
    if policies:
        for where, obj, spec in pod_specs(docs):
            labels = (obj["spec"]["template"]["metadata"]["labels"] if obj["kind"] != "Pod"
                      else obj["metadata"]["labels"])
            if not any(selector_matches(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"]["policyTypes"]
                       for p in policies):
                fail(f"{where}: no NetworkPolicy selects its pods")
    for name, s in by_kind.get("Secret", {}).items():
        if "stringData" in s:
            fail(f"Secret/{name}: uses stringData")
    finish(f"chart invariants hold for {len(deployments)} Deployments, {len(hpas)} HPAs, {len(pdbs)} PDBs")


# ---------------------------------------------------------------------------- rules
def rules_from_render(path, out):
    docs = [d for d in load_docs(path) if d["kind"] == "PrometheusRule"]
    if len(docs) != 1:
        print(f"expected one PrometheusRule, found {len(docs)}")
        sys.exit(1)
    groups = docs[0]["spec"]["groups"]
    for g in groups:
        for r in g["rules"]:
            if 'namespace="' not in r["expr"]:
                fail(f"{r.get('alert') or r.get('record')}: expression not scoped to the release namespace")
    with open(out, "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    finish(f"extracted {sum(len(g['rules']) for g in groups)} rules from the PrometheusRule")


def rules_test_for(test_file, rules_file, out):
    """The rule unit tests of test_file, pointed at another rule file."""
    with open(test_file) as f:
        tests = yaml.safe_load(f)
    tests["rule_files"] = [os.path.abspath(rules_file)]
    with open(out, "w") as f:
        yaml.safe_dump(tests, f, sort_keys=False)


# ------------------------------------------------------------------------ dashboards
KNOWN_METRICS = {
    "http_request_duration_seconds", "events_published_total", "event_publish_duration_seconds",
    "events_consumed_total", "event_consume_duration_seconds", "outbox_backlog", "outbox_published_total",
    "cache_requests_total", "ratelimit_decisions_total", "websocket_connections",
    "notifications_emails_sent_total", "upstream_request_duration_seconds",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
    "nodejs_heap_size_used_bytes", "nodejs_heap_size_total_bytes", "up",
}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m",
                "$namespace": ".*", "$service": "gateway|auth|user|chat|notification"}


def dashboards(directory, rules_out):
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not files:
        fail(f"no dashboards in {directory}")
    uids, exprs = {}, []
    for path in files:
        name = os.path.basename(path)
        try:
            d = json.load(open(path))
        except ValueError as e:
            fail(f"{name}: invalid JSON: {e}")
            continue
        for key in ("uid", "title", "panels", "templating"):
            if key not in d:
                fail(f"{name}: no {key}")
        if d.get("uid") in uids:
            fail(f"{name}: uid {d['uid']} also used by {uids[d['uid']]}")
        uids[d.get("uid")] = name
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        if variables.get("datasource", {}).get("type") != "datasource":
            fail(f"{name}: no `datasource` variable (needed to work with any Prometheus data source)")
        ids = set()
        for p in d.get("panels", []):
            if p["id"] in ids:
                fail(f"{name}: duplicate panel id {p['id']}")
            ids.add(p["id"])
            if p["type"] == "row":
                continue
            if (p.get("datasource") or {}).get("uid") != "${datasource}":
                fail(f"{name} panel {p['title']!r}: data source is not ${{datasource}}")
            for t in p.get("targets", []):
                exprs.append((f"{name} / {p['title']}", t["expr"]))
    rules = []
    for i, (where, expr) in enumerate(exprs):
        promql = expr
        for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
            promql = promql.replace(var, value)
        if "$" in promql.replace("${1}", ""):
            fail(f"{where}: unknown Grafana variable in {expr}")
        for metric in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", promql):
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            if metric not in KNOWN_METRICS and base not in KNOWN_METRICS:
                fail(f"{where}: unknown metric {metric}")
        rules.append({"record": f"dashboard:query:{i}", "expr": promql})
    with open(rules_out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f, sort_keys=False)
    finish(f"{len(files)} dashboards, {len(exprs)} queries checked")


# -------------------------------------------------------------------------- compose
def json_schema(document, schema_path, label):
    schema = json.load(open(schema_path))
    validator = jsonschema.validators.validator_for(schema)(schema)
    for e in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        fail(f"{label} {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}")


def compose(path, schema_path, root):
    doc = yaml.safe_load(open(path))
    json_schema(doc, schema_path, "schema:")
    services = doc.get("services", {})
    allowed = {("127.0.0.1", 4000): "gateway", ("127.0.0.1", 3000): "grafana", ("127.0.0.1", 8025): "mailpit",
               ("127.0.0.1", 15672): "rabbitmq", ("127.0.0.1", 9090): "prometheus"}
    published = {}
    for name, s in services.items():
        for p in s.get("ports", []) or []:
            if isinstance(p, dict):
                host_ip, port = p.get("host_ip"), int(p.get("published"))
            else:
                parts = str(p).split(":")
                if len(parts) != 3:
                    fail(f"{name}: port {p} is not bound to an explicit host address")
                    continue
                host_ip, port = parts[0], int(parts[1])
            published[(host_ip, port)] = name
            if allowed.get((host_ip, port)) != name:
                fail(f"{name}: publishes {host_ip}:{port}, which is not in the allowed set")
        for dep, cond in (s.get("depends_on") or {}).items():
            if dep not in services:
                fail(f"{name}: depends on unknown service {dep}")
        for v in s.get("volumes", []) or []:
            source = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if source.startswith("./") and not os.path.exists(os.path.join(root, source)):
                fail(f"{name}: mounts missing {source}")
        build = s.get("build")
        if isinstance(build, dict):
            if build.get("context") != ".":
                fail(f"{name}: build context is not the repository root")
            if not os.path.exists(os.path.join(root, build.get("dockerfile", ""))):
                fail(f"{name}: missing Dockerfile {build.get('dockerfile')}")
    for port, name in allowed.items():
        if published.get(port) != name:
            fail(f"{name} does not publish {port[0]}:{port[1]}")
    for svc in SERVICES:
        s = services.get(svc)
        if not s:
            fail(f"no {svc} service")
            continue
        if s.get("build", {}).get("dockerfile") != f"services/{svc}/Dockerfile":
            fail(f"{svc}: not built from services/{svc}/Dockerfile")
        if s.get("environment", {}).get("PORT") != str(PORTS[svc]):
            fail(f"{svc}: PORT is not {PORTS[svc]}")
        if svc != "gateway":
            migrate = services.get(f"migrate-{svc}")
            if not migrate or migrate.get("command") != ["migrate"]:
                fail(f"no migrate-{svc} one-shot service running `migrate`")
            elif (s.get("depends_on") or {}).get(f"migrate-{svc}", {}).get("condition") != "service_completed_successfully":
                fail(f"{svc} does not wait for migrate-{svc} to complete")
            elif migrate.get("image") != s.get("image"):
                fail(f"migrate-{svc} does not run the {svc} image")
        for dep, cond in (s.get("depends_on") or {}).items():
            if dep in ("postgres", "redis", "rabbitmq", "mongodb", "mailpit") and cond.get("condition") != "service_healthy":
                fail(f"{svc}: does not wait for {dep} to be healthy")
    for infra in ("postgres", "redis", "rabbitmq", "mongodb", "mailpit", "prometheus", "grafana"):
        if not (services.get(infra) or {}).get("healthcheck"):
            fail(f"{infra}: no healthcheck")
    finish(f"docker-compose.yml: {len(services)} services valid")


# ------------------------------------------------------------------------- skaffold
def sanitize(name):
    return re.sub(r"[/\-.:]", "_", name)


def skaffold(path, schema_path, root):
    doc = yaml.safe_load(open(path))
    json_schema(doc, schema_path, "schema:")
    expected = {f"parley-{s}": s for s in SERVICES}

    def check_artifacts(artifacts, where, dev):
        images = [a["image"] for a in artifacts]
        if sorted(images) != sorted(expected):
            fail(f"{where}: artifacts {images}, expected {sorted(expected)}")
        for a in artifacts:
            svc = expected.get(a["image"])
            docker = a.get("docker") or {}
            if a.get("context") != ".":
                fail(f"{where} {a['image']}: context is not '.'")
            if docker.get("dockerfile") != f"services/{svc}/Dockerfile":
                fail(f"{where} {a['image']}: dockerfile {docker.get('dockerfile')}")
            if dev:
                if docker.get("target") != "dev":
                    fail(f"{where} {a['image']}: no `target: dev`")
                srcs = [r["src"] for r in (a.get("sync") or {}).get("manual", [])]
                if sorted(srcs) != sorted([f"services/{svc}/src/**/*.ts", "packages/*/src/**/*.ts"]):
                    fail(f"{where} {a['image']}: sync rules {srcs}")

    check_artifacts(doc["build"]["artifacts"], "build", dev=False)
    for p in doc.get("profiles", []):
        if "patches" in p:
            fail(f"profile {p['name']}: uses patches (list-index based)")
        if p.get("build", {}).get("artifacts"):
            check_artifacts(p["build"]["artifacts"], f"profile {p['name']}", dev=p["name"] == "dev")
    if "dev" not in [p["name"] for p in doc.get("profiles", [])]:
        fail("no `dev` profile")
    releases = doc["deploy"]["helm"]["releases"]
    for r in releases:
        if not os.path.isdir(os.path.join(root, r["chartPath"])):
            fail(f"release {r['name']}: chartPath {r['chartPath']} missing")
        for v in r.get("valuesFiles", []):
            if not os.path.exists(os.path.join(root, v)):
                fail(f"release {r['name']}: values file {v} missing")
        templates = r.get("setValueTemplates", {})
        for image, svc in expected.items():
            s = sanitize(image)
            want = {f"services.{svc}.image.repository": f"{{{{.IMAGE_REPO_{s}}}}}",
                    f"services.{svc}.image.tag": f"{{{{.IMAGE_TAG_{s}}}}}@{{{{.IMAGE_DIGEST_{s}}}}}"}
            for key, value in want.items():
                if templates.get(key) != value:
                    fail(f"release {r['name']}: setValueTemplates[{key}] is {templates.get(key)!r}, expected {value!r}")
        if str((r.get("setValues") or {}).get("infra.enabled")).lower() != "true":
            fail(f"release {r['name']}: infra.enabled is not set to true")
    forwards = {(f.get("resourceName"), f.get("localPort")) for f in doc.get("portForward", [])}
    if ("parley-gateway", 4000) not in forwards:
        fail("no port-forward of the gateway on 4000")
    if not any("grafana" in (name or "") for name, _ in forwards):
        fail("no port-forward of Grafana")
    finish("skaffold.yaml valid")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "k8s-schemas":
        k8s_schemas(*args)
    elif command == "pods":
        pods(args[0], "--read-only-root" in args[1:])
    elif command == "chart":
        chart(args[0])
    elif command == "rules-from-render":
        rules_from_render(*args)
    elif command == "rules-test-for":
        rules_test_for(*args)
    elif command == "dashboards":
        dashboards(*args)
    elif command == "compose":
        compose(*args)
    elif command == "skaffold":
        skaffold(*args)
    else:
        sys.exit(f"unknown command {command}")
PY
py() { "$PYTHON" "$CHECKS" "$@"; }

# ---------------------------------------------------------------------------- schemas
K8S_SCHEMAS=$CACHE/kubeconform-schemas/v$KUBE_VERSION
check "kubernetes $KUBE_VERSION JSON schemas generated" py k8s-schemas "$SWAGGER" "$K8S_SCHEMAS"

kubeconform_file() {
  "$KUBECONFORM" -strict -summary -output text -kubernetes-version "$KUBE_VERSION" \
    -schema-location "$K8S_SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$SCHEMAS/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "$1"
}

# --------------------------------------------------------------------------- the chart
# name|values file (- = chart defaults)|pod check flags
VALUE_SETS=(
  "defaults|-|--read-only-root"
  "full|$CHART/ci/full-values.yaml|--read-only-root"
  "existing-secret|$CHART/ci/existing-secret-values.yaml|--read-only-root"
  "minimal|$CHART/ci/minimal-values.yaml|--read-only-root"
  "dev|k8s/dev/values.yaml|"
)
MONITORING_APIS=(--api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PrometheusRule)
for entry in "${VALUE_SETS[@]}"; do
  IFS='|' read -r name file flags <<<"$entry"
  args=()
  [[ $file == - ]] || args=(-f "$file")
  rendered=$WORK/render-$name.yaml
  check "helm lint --strict ($name)" "$HELM" lint --strict "$CHART" --kube-version "$KUBE_VERSION" "${args[@]}"
  if "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" --kube-version "$KUBE_VERSION" "${MONITORING_APIS[@]}" \
    "${args[@]}" >"$rendered" 2>"$WORK/render-$name.err"; then
    RESULTS+=("PASS  helm template ($name)")
    check "kubeconform -strict ($name)" kubeconform_file "$rendered"
    # shellcheck disable=SC2086 # flags is a word list
    check "pod security restricted + pod rules ($name)" py pods "$rendered" $flags
    check "chart invariants ($name)" py chart "$rendered"
  else
    RESULTS+=("FAIL  helm template ($name)")
    FAILED=$((FAILED + 1))
    cat "$WORK/render-$name.err" >&2
  fi
done

# The ci value sets must cover the optional resources.
covers_kinds() {
  local kind missing=0
  for kind in HorizontalPodAutoscaler PodDisruptionBudget Ingress NetworkPolicy ServiceMonitor PrometheusRule ConfigMap Job; do
    if ! grep -q "^kind: $kind\$" "$WORK"/render-*.yaml; then
      echo "no value set renders a $kind"
      missing=1
    fi
  done
  return $missing
}
check "value sets cover every optional resource" covers_kinds

must_fail_schema() {
  local file=$1 out
  if out=$("$HELM" lint --strict "$CHART" --kube-version "$KUBE_VERSION" -f "$file" 2>&1); then
    echo "$file was accepted"
    return 1
  fi
  echo "$out"
  grep -q "don't meet the specifications of the schema" <<<"$out"
}
for file in "$CHART"/ci/invalid/*.yaml; do
  check "schema rejects $(basename "$file")" must_fail_schema "$file"
done

# ----------------------------------------------------------------------------- rules
RULES=$CHART/rules/parley.rules.yaml
RULE_TESTS=$CHART/rules/parley.rules.test.yaml
check "promtool check rules (rules/parley.rules.yaml)" promtool check rules "$RULES"
check "promtool test rules (rules/parley.rules.test.yaml)" promtool test rules "$RULE_TESTS"
rendered_rules() {
  py rules-from-render "$WORK/render-full.yaml" "$WORK/rendered.rules.yaml" &&
    promtool check rules "$WORK/rendered.rules.yaml" &&
    py rules-test-for "$RULE_TESTS" "$WORK/rendered.rules.yaml" "$WORK/rendered.rules.test.yaml" &&
    promtool test rules "$WORK/rendered.rules.test.yaml"
}
check "PrometheusRule as rendered: promtool check + test" rendered_rules
prometheus_config() {
  sed "s#/etc/prometheus/rules/\*.rules.yaml#$ROOT/$RULES#" deploy/prometheus/prometheus.yml >"$WORK/prometheus.yml"
  promtool check config "$WORK/prometheus.yml"
}
check "promtool check config (deploy/prometheus/prometheus.yml)" prometheus_config

# ------------------------------------------------------------------------ dashboards
dashboard_queries() {
  py dashboards "$CHART/dashboards" "$WORK/dashboards.rules.yaml" && promtool check rules "$WORK/dashboards.rules.yaml"
}
check "grafana dashboards (JSON, variables, PromQL, metric names)" dashboard_queries

# ----------------------------------------------------------------- compose, skaffold
check "docker-compose.yml (compose-spec schema + project rules)" py compose docker-compose.yml "$SCHEMAS/compose/compose-spec.json" "$ROOT"
# the schema of the apiVersion skaffold.yaml declares; a version with no vendored schema fails
SKAFFOLD_API=$(sed -n 's#^apiVersion: *skaffold/\(v[0-9a-z]*\).*#\1#p' skaffold.yaml)
check "skaffold.yaml (skaffold/$SKAFFOLD_API schema + wiring)" py skaffold skaffold.yaml "$SCHEMAS/skaffold/$SKAFFOLD_API.json" "$ROOT"

# --------------------------------------------------------------------------- summary
printf '\n%s\n' "validate-deploy summary (helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION, Kubernetes $KUBE_VERSION):"
printf '  %s\n' "${RESULTS[@]}"
if ((FAILED > 0)); then
  printf '%d check(s) failed\n' "$FAILED"
  exit 1
fi
printf 'all %d checks passed\n' "${#RESULTS[@]}"
