"""What a check is given: the doctor's options and the endpoint being examined (``Probe``), with
what earlier checks found about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from deepseek_engine.client import ChatClient
from deepseek_engine.families import Family, family_of
from deepseek_engine.settings import Endpoint, Settings

__all__ = ["FLAVOR_NAME", "Options", "Probe", "host_port", "ms"]

FLAVOR_NAME = {"vllm": "vLLM", "sglang": "SGLang", None: "the server"}


@dataclass
class Options:
    api_key: str | None = None
    model: str | None = None
    catalogue: str | None = None  # the plugin's model the endpoint will serve as (its family)
    requests: int = 3
    timeout: float = 60.0  # first token: a cold R1 with a long queue may need more (--timeout)
    ca_bundle: str | None = None  # PEM text
    client_cert: str | None = None
    client_key: str | None = None
    insecure: bool = False
    oauth2_token_url: str | None = None  # OAuth2 client credentials, as the plugin's settings
    oauth2_client_id: str | None = None
    oauth2_client_secret: str | None = field(default=None, repr=False)
    oauth2_scope: str | None = None
    oauth2_audience: str | None = None
    strict: bool = False  # warnings fail the run too


class Probe:
    """One endpoint being examined: its settings, client, and what earlier checks found."""

    def __init__(self, endpoint: Endpoint, settings: Settings, client: ChatClient | None,
                 opts: Options) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.client = client
        self.opts = opts
        self.failed: dict[str, str] = {}  # check that failed or was skipped -> the root failure
        self.served: list[dict] | None = None
        self.model: str | None = None
        self.flavor: str | None = None  # "vllm" | "sglang" | None
        self.shape: str | None = None
        self.thinks: bool | None = None  # reasoning seen when asked to think (check_reasoning)
        self.usage_seen: bool | None = None
        self.gateway: str | None = None  # a gateway's name when the endpoint is one (check_gateway)
        self.listed = 1  # endpoints given to the doctor, this one included

    @property
    def family(self) -> Family:
        """The model's family, as the plugin decides it: the catalogue name first, then the served id."""
        return family_of(self.opts.catalogue, self.model)


def ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f} ms"


def host_port(ep: Endpoint) -> tuple[str, int]:
    parts = urlsplit(ep.url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)

