#!/usr/bin/env python3
"""Checks the Helm chart packaging/helm/gpulse (run by .ci/helm.sh, in its venv).

With Helm's own Go SDK (helm-python-sdk) it lints the chart and renders it for every values
file of the matrix in packaging/helm/gpulse/ci/, checks each against values.schema.json,
validates every rendered Kubernetes object against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields fail) and the Prometheus Operator objects
against the fields of their CRDs the chart uses, runs the shipped promtool unit tests
against the rules as the rendered PrometheusRules hold them, checks the NPD plugin config
the way NPD does, passes the agent's rendered environment and config file to
`gpulse config check` (so every GPULSE_* name the chart sets is a real config key), and
asserts the privileges of each matrix entry. Any failure exits 1 with what and where.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "packaging/helm/gpulse"
KUBE_VERSIONS = ["1.30.0", "1.37.0"]  # the oldest the chart is checked on, and the newest schemas
NAMESPACE = "gpulse"
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print(f"FAIL: {msg}", file=sys.stderr)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


# The chart's copies of the shipped rules and dashboards must be the files CI tests.
SHIPPED = {
    "gpulse-rules.yaml": ROOT / "packaging/prometheus/gpulse-rules.yaml",
    "gpulse-score.rules.yml": ROOT / "packaging/prometheus/gpulse-score.rules.yml",
    "gpulse-fleet.json": ROOT / "packaging/grafana/gpulse-fleet.json",
    "gpulse-node.json": ROOT / "packaging/grafana/gpulse-node.json",
}
RULE_TESTS = {
    "gpulse-rules.yaml": ROOT / "packaging/prometheus/gpulse-rules.test.yaml",
    "gpulse-score.rules.yml": ROOT / "packaging/prometheus/gpulse-score.rules.test.yml",
}


def check_copies():
    for name, original in SHIPPED.items():
        copy = CHART / "files" / name
        check(
            copy.read_bytes() == original.read_bytes(),
            f"{copy.relative_to(ROOT)} differs from {original.relative_to(ROOT)}: "
            f"cp {original.relative_to(ROOT)} {copy.relative_to(ROOT)}",
        )
    extra = {p.name for p in (CHART / "files").iterdir()} - set(SHIPPED)
    check(not extra, f"unexpected files in the chart's files/: {sorted(extra)}")


# The Prometheus Operator CRDs are not in the Kubernetes schemas: these are the fields of
# monitoring.coreos.com/v1 the chart emits (names as in the CRDs), unknown ones rejected.
def _obj(props, required=(), extra=False):
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": extra}


_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_META = _obj({"name": _STR, "namespace": _STR, "labels": _LABELS, "annotations": _LABELS},
             ["name", "namespace"])
_SELECTOR = _obj({"matchLabels": _LABELS}, ["matchLabels"])
_NS_SELECTOR = _obj({"matchNames": {"type": "array", "items": _STR, "minItems": 1}})
_ENDPOINT = _obj({
    "port": _STR, "path": _STR, "scheme": {"enum": ["http", "https"]},
    "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"},
    "scrapeTimeout": {"type": "string", "pattern": r"^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"},
    "tlsConfig": {"type": "object"},
    "authorization": _obj({"type": _STR, "credentials": _obj({"name": _STR, "key": _STR},
                                                             ["name", "key"])}),
    "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
}, ["port"])
_RULE = {
    "type": "object",
    "properties": {"record": _STR, "alert": _STR, "expr": _STR, "for": _STR,
                   "keep_firing_for": _STR, "labels": _LABELS, "annotations": _LABELS},
    "required": ["expr"], "additionalProperties": False,
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
}
_GROUP = _obj({"name": _STR, "interval": _STR, "limit": {"type": "integer"},
               "rules": {"type": "array", "items": _RULE, "minItems": 1}}, ["name", "rules"])


def _cr(kind, spec):
    return _obj({"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": kind},
                 "metadata": _META, "spec": spec}, ["apiVersion", "kind", "metadata", "spec"])


CRD_SCHEMAS = {
    "ServiceMonitor": _cr("ServiceMonitor", _obj({
        "jobLabel": _STR, "selector": _SELECTOR, "namespaceSelector": _NS_SELECTOR,
        "endpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1}},
        ["selector", "endpoints"])),
    "PodMonitor": _cr("PodMonitor", _obj({
        "jobLabel": _STR, "selector": _SELECTOR, "namespaceSelector": _NS_SELECTOR,
        "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1}},
        ["selector", "podMetricsEndpoints"])),
    "PrometheusRule": _cr("PrometheusRule", _obj({
        "groups": {"type": "array", "items": _GROUP, "minItems": 1}}, ["groups"])),
}


def validate_object(where, doc):
    kind = doc.get("kind", "?")
    if kind in CRD_SCHEMAS:
        try:
            jsonschema.validate(doc, CRD_SCHEMAS[kind])
        except jsonschema.ValidationError as e:
            fail(f"{where}: {kind}: {e.message} at {list(e.absolute_path)}")
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except Exception as e:  # ValidationError, SchemaNotFoundError: both are failures here
            fail(f"{where}: {kind}/{doc['metadata'].get('name')} on Kubernetes {version}: {e}")


def render(values, name="gpulse"):
    """Lint with these values (strict), check them against the schema and render."""
    report = helm.lint(str(CHART), values, strict=True, kube_version="v1.30.0",
                       namespace=NAMESPACE)
    for m in report["messages"]:
        if m["severity"] >= 2:
            fail(f"helm lint: {m['path']}: {m['error']}")
    for e in report["errors"]:
        fail(f"helm lint: {e}")
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=name, namespace=NAMESPACE)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def by_kind(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


def the(docs, kind):
    found = by_kind(docs, kind)
    if len(found) != 1:
        raise SystemExit(f"expected one {kind}, rendered {len(found)}")
    return found[0]


def promtool_tests(where, rules, tmp):
    """The shipped promtool unit tests, run against the rules as a PrometheusRule holds them."""
    for rule in rules:
        file = rule["metadata"]["annotations"]["gpulse/rules-file"]
        original = yaml.safe_load(SHIPPED[file].read_text())
        check(rule["spec"] == original, f"{where}: PrometheusRule for {file} differs from it")
        extracted = tmp / f"rendered-{file}"
        extracted.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
        test = yaml.safe_load(RULE_TESTS[file].read_text())
        check(test["rule_files"] == [file], f"{RULE_TESTS[file]}: rule_files is not [{file}]")
        test["rule_files"] = [extracted.name]
        test_file = tmp / f"rendered-{RULE_TESTS[file].name}"
        test_file.write_text(yaml.safe_dump(test, sort_keys=False))
        for cmd in (["promtool", "check", "rules", extracted.name],
                    ["promtool", "test", "rules", test_file.name]):
            run = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            if not check(run.returncode == 0, f"{where}: {' '.join(cmd)} failed:\n"
                                              f"{run.stdout}{run.stderr}"):
                continue
            print(f"  {' '.join(cmd)}: ok")


def check_dashboards(where, maps):
    seen = set()
    for cm in maps:
        for file, text in cm.get("data", {}).items():
            if file in SHIPPED:
                seen.add(file)
                check(json.loads(text) == json.loads(SHIPPED[file].read_text()),
                      f"{where}: dashboard ConfigMap {file} differs from {SHIPPED[file]}")
                check(cm["metadata"]["labels"].get("grafana_dashboard") == "1",
                      f"{where}: {cm['metadata']['name']} lacks the sidecar label")
    check(seen == {"gpulse-fleet.json", "gpulse-node.json"}, f"{where}: dashboards {seen}")


def check_npd(where, cm):
    """What NPD's custompluginmonitor checks when it loads the file, and the plugin's contract."""
    config = json.loads(cm["data"]["gpulse-custom-plugin-monitor.json"])

    def secs(d):
        return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u]
                   for n, u in re.findall(r"([0-9.]+)(ms|s|m|h)", d))

    check(config["plugin"] == "custom", f"{where}: NPD plugin is not custom")
    g = config["pluginConfig"]
    check(g["max_output_length"] >= 80, f"{where}: NPD cuts gpulse's 80-byte line")
    conditions = {c["type"] for c in config["conditions"]}
    for rule in config["rules"]:
        check(secs(rule["timeout"]) <= secs(g["timeout"]),
              f"{where}: NPD rule timeout exceeds the global timeout")
        check(rule["type"] != "permanent" or rule["condition"] in conditions,
              f"{where}: permanent NPD rule without a default condition")
        check(rule["path"].startswith("/") and rule["args"] == ["scan", "--format", "npd"],
              f"{where}: NPD rule does not run gpulse scan --format npd: {rule}")


def config_check(where, docs, gpulse, tmp):
    """The container's environment and config file, as `gpulse run` would read them."""
    ds = the(docs, "DaemonSet")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    root = tmp / "root"
    shutil.rmtree(root, ignore_errors=True)
    (root / "etc/gpulse/tls").mkdir(parents=True)
    (root / "etc/gpulse/token").mkdir(parents=True)
    (root / "var/lib/gpulse").mkdir(parents=True)
    (root / "etc/gpulse/token/token").write_text("ci-token\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=gpulse",
                    "-keyout", str(root / "etc/gpulse/tls/tls.key"),
                    "-out", str(root / "etc/gpulse/tls/tls.crt")],
                   check=True, capture_output=True)
    # The service-account mount the kubelet makes when the chart asks for a token (rbac.leases,
    # nodeCondition), relocated under the scratch root like the chart's own files.
    sa = root / "var/run/secrets/kubernetes.io/serviceaccount"
    sa.mkdir(parents=True)
    (sa / "token").write_text("ci-sa-token\n")
    shutil.copy(root / "etc/gpulse/tls/tls.crt", sa / "ca.crt")
    config = root / "etc/gpulse/gpulse.toml"
    maps = [m for m in by_kind(docs, "ConfigMap") if "gpulse.toml" in m.get("data", {})]
    config.write_text(maps[0]["data"]["gpulse.toml"] if maps else "")
    args = container.get("args", [])
    check(args[0] == "run", f"{where}: args {args}")
    check(("--config" in args) == bool(maps), f"{where}: --config without a config (or back)")

    env = {"PATH": os.environ["PATH"]}
    if spec_automounts(ds):
        # What the kubelet puts in every pod's environment, and the token's relocated paths.
        env["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
        env["KUBERNETES_SERVICE_PORT"] = "443"
        env["GPULSE_KUBERNETES_API_TOKEN_FILE"] = str(sa / "token")
        env["GPULSE_KUBERNETES_API_CA_FILE"] = str(sa / "ca.crt")
    for var in container["env"]:
        # A Secret's value is not in the manifest: a placeholder of the variable's format.
        secret = "x-ci=placeholder" if var["name"].endswith("_HEADERS") else "placeholder"
        value = var.get("value", secret if "valueFrom" in var else "")
        value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
        env[var["name"]] = value
    for name, value in list(env.items()):
        if value.startswith(("/etc/gpulse/", "/var/lib/gpulse")):
            env[name] = str(root) + value
    run = subprocess.run([gpulse, "config", "check", str(config)], env=env,
                         capture_output=True, text=True)
    if check(run.returncode == 0, f"{where}: gpulse config check with the rendered environment "
                                  f"failed: {run.stdout}{run.stderr}"):
        print(f"  gpulse config check (rendered env, {len(env) - 1} variables): ok")


def pod_spec(docs):
    return the(docs, "DaemonSet")["spec"]["template"]["spec"]


def volumes(spec):
    return {v["name"]: v for v in spec.get("volumes", [])}


def assert_defaults(where, docs):
    spec = pod_spec(docs)
    c = spec["containers"][0]
    sc = c["securityContext"]
    check(spec["securityContext"]["runAsNonRoot"] is True
          and spec["securityContext"]["runAsUser"] == 65532, f"{where}: not non-root")
    check(sc["readOnlyRootFilesystem"] is True, f"{where}: root filesystem writable")
    check(sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False,
          f"{where}: privilege escalation allowed")
    check(sc["capabilities"] == {"drop": ["ALL"]}, f"{where}: capabilities {sc['capabilities']}")
    check(not spec.get("hostPID") and not spec.get("hostNetwork"), f"{where}: host namespaces")
    check(not any("hostPath" in v for v in spec["volumes"]), f"{where}: hostPath volumes")
    check(spec["automountServiceAccountToken"] is False, f"{where}: API token mounted")
    check(not by_kind(docs, "ClusterRole") and not by_kind(docs, "ServiceAccount"),
          f"{where}: RBAC without a feature needing it")


def assert_common(where, docs):
    ds = the(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = {v["name"]: v for v in c["env"]}
    check(ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": 1}},
          f"{where}: updateStrategy")
    check(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
          and env["GPULSE_AGENT_NODE_NAME"]["value"] == "$(NODE_NAME)", f"{where}: node name")
    check(env["GPULSE_AGENT_MODE"]["value"] == "host", f"{where}: mode")
    check(env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
          and env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility", f"{where}: NVIDIA_*")
    check(c["securityContext"]["readOnlyRootFilesystem"] is True, f"{where}: writable root")
    check(any(m["mountPath"] == "/var/lib/gpulse" for m in c["volumeMounts"]),
          f"{where}: no state volume")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz"
          and c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{where}: probes")
    check(set(c["resources"]) == {"requests", "limits"}, f"{where}: resources")
    # The scrape job: the shipped alerts match up{job=~"gpulse.*"}.
    svc = the(docs, "Service")
    check(svc["metadata"]["labels"]["gpulse-job"].startswith("gpulse"), f"{where}: job label")
    for m in by_kind(docs, "ServiceMonitor") + by_kind(docs, "PodMonitor"):
        check(m["spec"]["jobLabel"] == "gpulse-job", f"{where}: {m['kind']} jobLabel")


def assert_kmsg(where, docs, privileged):
    spec = pod_spec(docs)
    c = spec["containers"][0]
    sc = c["securityContext"]
    check(spec["securityContext"]["runAsUser"] == 0, f"{where}: kmsg without root")
    check(sc["capabilities"] == {"drop": ["ALL"], "add": ["SYSLOG"]}, f"{where}: caps {sc}")
    check(sc["privileged"] is privileged, f"{where}: privileged is not {privileged}")
    check(("allowPrivilegeEscalation" not in sc) if privileged
          else sc["allowPrivilegeEscalation"] is False, f"{where}: allowPrivilegeEscalation")
    check(volumes(spec)["kmsg"]["hostPath"] == {"path": "/dev/kmsg", "type": "CharDevice"},
          f"{where}: /dev/kmsg hostPath")
    check(not spec.get("hostPID"), f"{where}: hostPID without attribution")


def assert_attribution(where, docs):
    spec = pod_spec(docs)
    c = spec["containers"][0]
    check(spec["hostPID"] is True, f"{where}: no hostPID")
    check(volumes(spec)["pod-resources"]["hostPath"]["path"] == "/var/lib/kubelet/pod-resources",
          f"{where}: pod-resources hostPath")
    mount = [m for m in c["volumeMounts"] if m["name"] == "pod-resources"]
    check(mount and mount[0]["readOnly"] is True, f"{where}: pod-resources mount not read-only")
    check(c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, f"{where}: caps")
    check(any(v["name"] == "GPULSE_KUBERNETES_POD_RESOURCES_SOCKET" for v in c["env"]),
          f"{where}: attribution env")


def spec_automounts(ds):
    return ds["spec"]["template"]["spec"].get("automountServiceAccountToken") is True


def assert_api(where, docs):
    """rbac.leases and nodeCondition: a token, exactly their rules, their agent settings."""
    spec = pod_spec(docs)
    check(spec.get("automountServiceAccountToken") is True, f"{where}: no service-account token")
    role = the(docs, "ClusterRole")
    rules = sorted((r["resources"][0], tuple(r["verbs"])) for r in role["rules"])
    check(rules == [("namespaces", ("get", "list", "watch")), ("nodes/status", ("patch",))],
          f"{where}: ClusterRole rules {rules}")
    binding = the(docs, "ClusterRoleBinding")
    check(binding["subjects"][0]["name"] == spec["serviceAccountName"], f"{where}: binding")
    env = {v["name"]: v.get("value") for v in spec["containers"][0]["env"]}
    check(env.get("GPULSE_KUBERNETES_LEASE_LABELS") == "true"
          and env.get("GPULSE_KUBERNETES_NODE_CONDITION") == "true", f"{where}: API env {env}")


def assert_tls(where, docs):
    spec = pod_spec(docs)
    c = spec["containers"][0]
    env = {v["name"]: v.get("value") for v in c["env"]}
    check(env.get("GPULSE_HTTP_TLS_CERT_FILE") == "/etc/gpulse/tls/tls.crt"
          and env.get("GPULSE_HTTP_BEARER_TOKEN_FILE") == "/etc/gpulse/token/token",
          f"{where}: TLS/token env")
    check(c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS", f"{where}: probe scheme")
    check(volumes(spec)["tls"]["secret"]["secretName"] == "gpulse-tls", f"{where}: TLS Secret")
    ep = the(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    check(ep["scheme"] == "https" and ep["authorization"]["credentials"]["name"] == "gpulse-token",
          f"{where}: ServiceMonitor endpoint {ep}")
    assert_defaults_nonroot(where, docs)


def assert_defaults_nonroot(where, docs):
    spec = pod_spec(docs)
    check(spec["securityContext"]["runAsNonRoot"] is True, f"{where}: not non-root")


def assert_monitoring(where, docs, tmp):
    kinds = sorted(d["kind"] for _, d in docs)
    check(len(by_kind(docs, "PrometheusRule")) == 2, f"{where}: PrometheusRules: {kinds}")
    promtool_tests(where, by_kind(docs, "PrometheusRule"), tmp)
    check_dashboards(where, [m for m in by_kind(docs, "ConfigMap") if "dashboard" in
                             m["metadata"]["name"]])
    check_npd(where, [m for m in by_kind(docs, "ConfigMap")
                      if m["metadata"]["name"].endswith("-npd")][0])
    role = the(docs, "ClusterRole")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    check(resources == {"namespaces", "nodes/status"}, f"{where}: RBAC {resources}")
    spec = pod_spec(docs)
    check(spec["automountServiceAccountToken"] is True and spec["serviceAccountName"],
          f"{where}: service account")
    env = {v["name"]: v for v in spec["containers"][0]["env"]}
    check(env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("http://otel-collector"),
          f"{where}: OTLP endpoint")
    check(spec["runtimeClassName"] == "nvidia", f"{where}: runtimeClassName")
    assert_defaults_nonroot(where, docs)


def main():
    gpulse = os.environ.get("GPULSE_BIN", "")
    check_copies()
    matrix = sorted((CHART / "ci").glob("*-values.yaml"))
    check(len(matrix) >= 5, f"values matrix too small: {matrix}")
    asserts = {
        "defaults": assert_defaults,
        "attribution": assert_attribution,
        "kmsg": lambda w, d: assert_kmsg(w, d, True),
        "kmsg-unprivileged": lambda w, d: assert_kmsg(w, d, False),
        "tls": assert_tls,
        "api": assert_api,
        "podmonitor": lambda w, d: check(
            the(d, "Service")["metadata"]["labels"]["gpulse-job"] == "gpulse-nodes"
            and the(d, "PodMonitor")["spec"]["jobLabel"] == "gpulse-job", f"{w}: PodMonitor"),
    }
    with tempfile.TemporaryDirectory(prefix="gpulse-helm-") as tmp:
        tmp = Path(tmp)
        for values_file in matrix:
            entry = values_file.name.removesuffix("-values.yaml")
            where = f"ci/{values_file.name}"
            values = yaml.safe_load(values_file.read_text()) or {}
            # A release not named gpulse: the job label must not depend on the release name.
            docs = render(values, name="gpulse" if entry != "podmonitor" else "prod")
            print(f"{where}: rendered {len(docs)} objects: "
                  f"{', '.join(sorted(d['kind'] for _, d in docs))}")
            for path, doc in docs:
                validate_object(f"{where}: {path}", doc)
            assert_common(where, docs)
            if entry == "monitoring":
                assert_monitoring(where, docs, tmp)
            elif entry in asserts:
                asserts[entry](where, docs)
            else:
                fail(f"{where}: no assertions for this matrix entry")
            if gpulse:
                config_check(where, docs, gpulse, tmp)
        # The schema rejects what it should.
        for bad, why in [({"bogus": 1}, "unknown key"), ({"scrapeJob": "nodes"}, "job prefix"),
                         ({"kmsg": {"enabled": "yes"}}, "type")]:
            try:
                with helm.Chart.load(str(CHART)) as chart:
                    chart.validate_schema(bad)
                fail(f"values.schema.json accepts {bad} ({why})")
            except helm.HelmError:
                pass
        for bad in [{"tls": {"enabled": True}}, {"bearerToken": {"enabled": True}}]:
            try:
                render(bad)
                fail(f"the chart renders {bad} (a Secret name is required)")
            except helm.HelmError:
                pass
    if not gpulse:
        fail("GPULSE_BIN is not set: the rendered environment was not checked")
    if FAILURES:
        print(f"\n{len(FAILURES)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print(f"helm chart: {len(matrix)} values files linted, rendered, validated and checked")


if __name__ == "__main__":
    main()
