"""Shared constants and helpers for the catalogue tests (imported by the test modules)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_YAML = "provider/deepseek_selfhosted.yaml"
TEMPLATE_YAML = "models/llm/templates/customizable.yaml"

R1_FAMILY = [
    "deepseek-r1",
    "deepseek-r1-distill-llama-70b",
    "deepseek-r1-distill-qwen-32b",
    "deepseek-r1-distill-qwen-14b",
    "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-7b",
    "deepseek-r1-distill-qwen-1.5b",
]
TOOL_CALL_CHAT = ["deepseek-v3", "deepseek-v2.5"]
V2_CHAT = ["deepseek-v2-chat", "deepseek-v2-lite-chat"]
EXPECTED_ORDER = [
    "deepseek-r1",
    "deepseek-v3",
    "deepseek-v2.5",
    "deepseek-r1-distill-llama-70b",
    "deepseek-r1-distill-qwen-32b",
    "deepseek-r1-distill-qwen-14b",
    "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-7b",
    "deepseek-r1-distill-qwen-1.5b",
    "deepseek-v2-chat",
    "deepseek-v2-lite-chat",
]
EXPECTED_LABELS = {
    "deepseek-r1": "DeepSeek-R1",
    "deepseek-v3": "DeepSeek-V3",
    "deepseek-v2.5": "DeepSeek-V2.5",
    "deepseek-r1-distill-llama-70b": "DeepSeek-R1-Distill-Llama-70B",
    "deepseek-r1-distill-qwen-32b": "DeepSeek-R1-Distill-Qwen-32B",
    "deepseek-r1-distill-qwen-14b": "DeepSeek-R1-Distill-Qwen-14B",
    "deepseek-r1-distill-llama-8b": "DeepSeek-R1-Distill-Llama-8B",
    "deepseek-r1-distill-qwen-7b": "DeepSeek-R1-Distill-Qwen-7B",
    "deepseek-r1-distill-qwen-1.5b": "DeepSeek-R1-Distill-Qwen-1.5B",
    "deepseek-v2-chat": "DeepSeek-V2-Chat",
    "deepseek-v2-lite-chat": "DeepSeek-V2-Lite-Chat",
}
PARAMETER_NAMES = {
    "temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "max_tokens", "seed",
}

# What the .difypkg must contain at top level (when present in the tree) and what it must never contain.
PACKAGE_TOP_LEVEL = {
    "manifest.yaml", "main.py", "provider", "models", "deepseek_engine", "_assets",
    "requirements.txt", "README.md", "PRIVACY.md", ".difyignore",
}
NEVER_PACKAGED_TOP_LEVEL = {
    "tests", "deepseek_sim", "deepseek_doctor", "scripts", "bench", "docs", ".ci", "deploy", "dist", ".git", ".venv",
    ".pytest_cache", ".hypothesis", ".gitignore", "requirements-dev.txt", ".env",
}


def load_yaml(rel: str | Path):
    return yaml.safe_load((ROOT / rel).read_text(encoding="utf-8"))


def model_yaml_files() -> list[Path]:
    return sorted(p for p in (ROOT / "models/llm").glob("*.yaml") if p.name != "_position.yaml")


def import_packager():
    """Import scripts/packager, the package scripts/package runs (scripts/ is not on sys.path)."""
    name = "deepseek_selfhosted_packager"
    if name in sys.modules:
        return sys.modules[name]
    where = ROOT / "scripts" / "packager"
    spec = importlib.util.spec_from_file_location(name, where / "__init__.py",
                                                  submodule_search_locations=[str(where)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
