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
# the current generation: tool-calling models that think (R1-0528 always, the others on demand)
TOOL_CALL_THINKING = ["deepseek-r1-0528", "deepseek-v3.1", "deepseek-v3.1-terminus", "deepseek-v3.2",
                      "deepseek-v4-flash", "deepseek-v4-pro", "deepseek-v4.1-flash"]
THINKING_ONLY = ["deepseek-v3.2-speciale"]  # always thinks, no tools
VISION_ONLY = ["deepseek-vl2", "deepseek-vl2-small", "deepseek-vl2-tiny", "deepseek-ocr-2", "deepseek-ocr"]
EXPECTED_ORDER = [
    "deepseek-v4.1-flash",
    "deepseek-v4-pro",
    "deepseek-v4-flash",
    "deepseek-v3.2",
    "deepseek-v3.2-speciale",
    "deepseek-v3.1-terminus",
    "deepseek-v3.1",
    "deepseek-r1-0528",
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
    "deepseek-vl2",
    "deepseek-vl2-small",
    "deepseek-vl2-tiny",
    "deepseek-ocr-2",
    "deepseek-ocr",
]
EXPECTED_LABELS = {
    "deepseek-v4.1-flash": "DeepSeek-V4.1-Flash",
    "deepseek-v4-pro": "DeepSeek-V4-Pro",
    "deepseek-v4-flash": "DeepSeek-V4-Flash",
    "deepseek-v3.2": "DeepSeek-V3.2",
    "deepseek-v3.2-speciale": "DeepSeek-V3.2-Speciale",
    "deepseek-v3.1-terminus": "DeepSeek-V3.1-Terminus",
    "deepseek-v3.1": "DeepSeek-V3.1",
    "deepseek-r1-0528": "DeepSeek-R1-0528",
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
    "deepseek-vl2": "DeepSeek-VL2",
    "deepseek-vl2-small": "DeepSeek-VL2-Small",
    "deepseek-vl2-tiny": "DeepSeek-VL2-Tiny",
    "deepseek-ocr-2": "DeepSeek-OCR-2",
    "deepseek-ocr": "DeepSeek-OCR",
}
# context sizes of the model cards (issue14-facts.md section 8); 131072 for the others
CONTEXT_SIZES = {
    "deepseek-v2-lite-chat": 32768,
    "deepseek-v4.1-flash": 1048576, "deepseek-v4-pro": 1048576, "deepseek-v4-flash": 1048576,
    "deepseek-vl2": 4096, "deepseek-vl2-small": 4096, "deepseek-vl2-tiny": 4096,
    "deepseek-ocr-2": 8192, "deepseek-ocr": 8192,
}
PARAMETER_NAMES = {
    "temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "max_tokens", "seed",
}
# structured output (docs/structured_output.md): every model but the OCR models, whose answer is
# the page's text
STRUCTURED_PARAMETERS = {"response_format", "json_schema"}
NO_STRUCTURED_OUTPUT = {"deepseek-ocr", "deepseek-ocr-2"}
# the hybrid models' thinking switch, and the effort levels of the V4 generation
THINKING_PARAMETERS = {
    "deepseek-v3.1": {"thinking"}, "deepseek-v3.1-terminus": {"thinking"}, "deepseek-v3.2": {"thinking"},
    "deepseek-v4-flash": {"thinking", "reasoning_effort"}, "deepseek-v4-pro": {"thinking", "reasoning_effort"},
    "deepseek-v4.1-flash": {"thinking", "reasoning_effort"},
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
