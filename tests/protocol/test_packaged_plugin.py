"""The plugin as Dify installs it: the .difypkg that scripts/package builds, extracted to a fresh
directory and launched from there, so a file the package leaves out but the code needs fails here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deepseek_sim import SimConfig, Simulator
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import PluginProcess, user_message
from tests.protocol.plugin_util import PROVIDER, ROOT, invokes

WANT = ("<think>\nOkay, the user sent me a message. I should reply with a short, friendly greeting."
        "\n</think>\n\nHello! I am a simulated DeepSeek model. How can I help you today?")


def _packager():
    where = ROOT / "scripts" / "packager"
    spec = importlib.util.spec_from_file_location("_packager_for_protocol", where / "__init__.py",
                                                  submodule_search_locations=[str(where)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    built = _packager().build(ROOT, tmp_path_factory.mktemp("dist"))
    target = tmp_path_factory.mktemp("installed")
    with zipfile.ZipFile(built.path) as zf:
        zf.extractall(target)
    return target


def test_the_extracted_package_validates_and_streams(installed):
    assert (installed / "main.py").is_file() and not (installed / "deepseek_doctor").exists()
    assert not (installed / "tests").exists() and not (installed / "deepseek_sim").exists()
    found = subprocess.run([sys.executable, "-c", "import deepseek_engine; print(deepseek_engine.__file__)"],
                           cwd=installed, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).parent == installed / "deepseek_engine"  # the package's code, not the tree's
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1", shape="reasoning")) as sim, \
            PluginProcess(installed).start(ready_timeout=60) as p:
        creds = {"endpoint_urls": sim.base_url, "api_key": None, "served_model_name": None}
        res = p.validate_provider_credentials(PROVIDER, creds)
        assert res.error is None and res.chunks[0]["result"] is True, res.error
        result = p.invoke_llm(PROVIDER, "deepseek-r1", creds, [user_message("hi")], {}, timeout=60)
        assert len(invokes(sim.requests)) == 1
    assert result.error is None, result.error
    assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []
    assert cr.collect_text(result) == WANT
    assert not any("Traceback" in str(m) for m in p.logs), p.logs
