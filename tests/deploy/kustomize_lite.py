"""Just enough of ``kustomize build`` for this repository's kustomizations, so CI can compose the
manifests without the kustomize binary: resources (files and directories), namespace, labels,
images, replicas and JSON 6902 patches with a target. Anything else in a kustomization is an
error here, so a new feature cannot slip past the checks unnoticed."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas",
             "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "PersistentVolume", "APIService"}


class KustomizeError(Exception):
    pass


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(directory: Path) -> dict:
    f = directory / "kustomization.yaml"
    if not f.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    k = yaml.safe_load(f.read_text()) or {}
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{f}: kustomize_lite does not support {sorted(unknown)}")
    return k


def referenced_files(directory: Path) -> set[Path]:
    """Every file a kustomization pulls in, through its bases too."""
    out = {(directory / "kustomization.yaml").resolve()}
    for r in kustomization(directory).get("resources", []):
        p = (directory / r).resolve()
        if p.is_dir():
            out |= referenced_files(p)
        elif p.is_file():
            out.add(p)
        else:
            raise KustomizeError(f"{directory}/kustomization.yaml: resource {r!r} does not exist")
    return out


def _pointer(path: str) -> list:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    return [int(p) if p.isdigit() else p for p in parts]


def apply_json6902(doc: dict, ops: list[dict]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for key in parents:
            node = node[key]
        kind = op["op"]
        if kind == "add":
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else last, op["value"])
            else:
                node[last] = op["value"]
        elif kind == "replace":
            node[last]
            node[last] = op["value"]
        elif kind == "remove":
            del node[last]
        else:
            raise KustomizeError(f"unsupported patch op {kind!r}")


def _matches(doc: dict, target: dict) -> bool:
    return all(doc.get(k) == v if k == "kind" else doc["metadata"].get(k) == v
               for k, v in target.items() if k in ("kind", "name", "namespace"))


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def build(directory: Path) -> list[dict]:
    directory = directory.resolve()
    k = kustomization(directory)
    docs: list[dict] = []
    for r in k.get("resources", []):
        p = directory / r
        docs += build(p) if p.is_dir() else copy.deepcopy(load_docs(p))
    for patch in k.get("patches", []):
        target, ops = patch.get("target"), yaml.safe_load(patch.get("patch", ""))
        if not target or not isinstance(ops, list):
            raise KustomizeError("kustomize_lite supports only JSON 6902 patches with a target")
        hits = [d for d in docs if _matches(d, target)]
        if not hits:
            raise KustomizeError(f"patch target {target} matches nothing")
        for d in hits:
            apply_json6902(d, ops)
    for rep in k.get("replicas", []):
        hits = [d for d in docs if d["metadata"]["name"] == rep["name"] and "replicas" in d.get("spec", {})]
        if not hits:
            raise KustomizeError(f"replicas: nothing named {rep['name']!r} has replicas")
        for d in hits:
            d["spec"]["replicas"] = rep["count"]
    for img in k.get("images", []):
        for d in docs:
            for c in _containers(d):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"
    for entry in k.get("labels", []):
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeSelectors") or entry.get("includeTemplates"):
                raise KustomizeError("kustomize_lite does not propagate labels to selectors/templates")
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = k["namespace"]
    return docs
