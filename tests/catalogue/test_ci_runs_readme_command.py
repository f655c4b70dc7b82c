"""CI runs the README's test command, the very line, so the two cannot drift apart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Run the tests", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    assert "\n" not in command, command  # one command
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()]
    assert command in ci, (command, ci)
    # CI can run real vLLM: there the tier must not be skipped, so it is required before the run
    assert "export DEEPSEEK_REAL_VLLM=require" in ci[:ci.index(command)], ci
