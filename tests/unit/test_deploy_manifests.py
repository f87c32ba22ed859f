"""The Kubernetes manifests: valid against the Kubernetes schemas, least privilege, one alert source."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from nstrack.kernel.caps import STARTUP_CAPS

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def docs(name: str) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_core_manifests_validate_against_kubernetes_schemas() -> None:
    import kubernetes_validate

    for name in ("namespace.yaml", "daemonset.yaml", "service.yaml"):
        for d in docs(name):
            if d["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD of the Prometheus Operator: not in the core schemas (checked below)
            kubernetes_validate.validate(d, "1.29", strict=True)


def test_daemonset_least_privilege() -> None:
    ds = docs("daemonset.yaml")[0]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    c = spec["containers"][0]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {f"CAP_{x}" for x in sc["capabilities"]["add"]} == set(STARTUP_CAPS)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" == c["readinessProbe"]["httpGet"]["path"]
    paths = {v["hostPath"]["path"] for v in spec["volumes"]}
    assert {"/sys/kernel/btf", "/sys/fs/bpf", "/sys/kernel/tracing"} <= paths


def test_prometheusrule_equals_the_alert_file() -> None:
    spec = importlib.util.spec_from_file_location("gen", K8S.parent / "gen_prometheusrule.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = docs("prometheusrule.yaml")[0]
    assert committed == gen.build(), "run deploy/gen_prometheusrule.py"
    assert committed["spec"] == yaml.safe_load((K8S.parent.parent / "dashboards" / "alerts.yml").read_text())
    kust = docs("kustomization.yaml")[0]
    assert set(kust["resources"]) == {"namespace.yaml", "daemonset.yaml", "service.yaml", "prometheusrule.yaml"}
    sm = next(d for d in docs("service.yaml") if d["kind"] == "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
