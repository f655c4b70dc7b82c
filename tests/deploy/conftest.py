"""Deploy tier: deploy/ validated offline (Kubernetes JSON schemas bundled by kubernetes-validate,
the Compose spec schema bundled by check-jsonschema, yamllint), composed like kustomize, and
checked for the things an operator relies on (GPU, probes, selectors, metrics, alerts)."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


@pytest.fixture(scope="session")
def overlays():
    return sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
