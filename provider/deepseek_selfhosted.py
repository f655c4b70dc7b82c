"""The provider: validation of the shared credentials (endpoints, key, served model)."""

import logging
import time
from collections.abc import Mapping

from dify_plugin import ModelProvider
from dify_plugin.entities.model import ModelType
from dify_plugin.entities.model.message import UserPromptMessage
from dify_plugin.errors.model import CredentialsValidateFailedError

from deepseek_engine import EngineError, Settings, parse_settings
from deepseek_engine.discovery import normalise
from deepseek_engine.errors import public_message, report_unexpected, secret_scope
from deepseek_engine.settings import credential_secrets
from deepseek_engine.validation import validate_endpoints

log = logging.getLogger("deepseek_selfhosted")
_WARM_RUNS = 6  # tiny (one token each); enough for CPython 3.12's adaptive interpreter to specialise the hot path
_WARM_TIMEOUTS = "connect=2 first_token=5 idle=5 total=5"
_WARM_BUDGET = 3.0  # seconds of warm-up at most, whatever the server's pace


class DeepSeekSelfHostedProvider(ModelProvider):
    def validate_provider_credentials(self, credentials: Mapping) -> None:
        settings = None
        with secret_scope(credential_secrets(credentials)):  # a server may quote them back
            try:
                settings = parse_settings(credentials)
                found = validate_endpoints(settings, wanted=settings.served_model_name, catalogue=None)
            except EngineError as e:
                raise CredentialsValidateFailedError(public_message(e, settings)) from None
            except Exception as e:  # noqa: BLE001 - the last line of defence: typed and scrubbed
                raise CredentialsValidateFailedError(report_unexpected(e, settings)) from None
            self._warm_request_path(credentials, settings, found[0].id if found else None)

    def _warm_request_path(self, credentials: Mapping, settings: Settings, served: str | None) -> None:
        """Run a user's request path (SDK invoke, adapter, engine, chunk building; discovery
        cached) a few times with one-token answers, so the first real request is a warm one."""
        if not served:
            return
        try:
            llm = self.get_model_instance(ModelType.LLM)
            # the catalogue entry for what is served (the path a user who picks it takes: schema
            # from YAML, discovery by name), and the served id itself (a customizable model)
            key = normalise(served)
            catalogue = next((m.model for m in llm.predefined_models() if normalise(m.model) == key), None)
            names = [n for n in (catalogue, served) if n]
            # short deadlines: a busy GPU queue must not keep the operator's Save waiting
            quick = {**credentials, "timeouts": _WARM_TIMEOUTS}
            until = time.monotonic() + _WARM_BUDGET
            for i in range(_WARM_RUNS):
                if time.monotonic() > until:
                    break
                for _ in llm.invoke(names[i % len(names)], quick, [UserPromptMessage(content="ping")],
                                    {"max_tokens": 1}, None, None, True, None):
                    pass
        except Exception as e:  # noqa: BLE001 - best effort: validation already passed
            log.info("request-path warm-up skipped: %s", public_message(e, settings))
