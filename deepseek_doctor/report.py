"""What the doctor found: one ``Check`` per probe, grouped per endpoint, rendered as text or JSON.

Every rendered string is scrubbed of the settings' secrets (the API key, the OAuth2 client secret)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from deepseek_engine.errors import scrub

__all__ = ["FAIL", "OK", "SKIP", "WARN", "Check", "EndpointReport", "Report"]

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    data: dict = field(default_factory=dict)


@dataclass
class EndpointReport:
    endpoint: str
    checks: list[Check]
    model: str | None = None
    flavor: str | None = None
    shape: str | None = None
    family: str | None = None  # deepseek_engine.families: how the plugin treats the model

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass
class Report:
    endpoints: list[EndpointReport]
    fleet: list[Check]
    secrets: list[str] = field(default_factory=list, repr=False)
    strict: bool = False  # --strict: a warning fails the run too

    @property
    def all_checks(self) -> list[Check]:
        return [c for e in self.endpoints for c in e.checks] + self.fleet

    @property
    def exit_code(self) -> int:
        failing = (FAIL, WARN) if self.strict else (FAIL,)
        return 1 if any(c.status in failing for c in self.all_checks) else 0

    def counts(self) -> dict[str, int]:
        out = {OK: 0, WARN: 0, FAIL: 0, SKIP: 0}
        for c in self.all_checks:
            out[c.status] += 1
        return out

    def to_dict(self) -> dict:
        return {"ok": self.exit_code == 0, "exit_code": self.exit_code, "strict": self.strict,
                "summary": self.counts(),
                "endpoints": [{"endpoint": e.endpoint, "model": e.model, "server": e.flavor,
                               "family": e.family, "reasoning_shape": e.shape,
                               "checks": [asdict(c) for c in e.checks]} for e in self.endpoints],
                "fleet": [asdict(c) for c in self.fleet]}

    def to_json(self) -> str:
        return scrub(json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str),
                     self.secrets)

    def render(self) -> str:
        plural = "s" if len(self.endpoints) != 1 else ""
        lines = [f"DeepSeek endpoint doctor: {len(self.endpoints)} endpoint{plural}", ""]
        width = max((len(c.name) for c in self.all_checks), default=8)
        for e in self.endpoints:
            lines.append(e.endpoint)
            lines += [f"  {c.status:<5} {c.name:<{width}}  {c.detail}" for c in e.checks]
            lines.append("")
        if self.fleet:
            lines.append(f"all {len(self.endpoints)} endpoints")
            lines += [f"  {c.status:<5} {c.name:<{width}}  {c.detail}" for c in self.fleet]
            lines.append("")
        n = self.counts()
        verdict = "FAILED" if self.exit_code else "passed"
        if self.exit_code and not n[FAIL]:
            verdict += " (--strict: warnings fail)"
        lines.append(f"{verdict}: {n[OK]} ok, {n[WARN]} warnings, {n[FAIL]} failed"
                     + (f", {n[SKIP]} skipped" if n[SKIP] else ""))
        return scrub("\n".join(lines), self.secrets)
