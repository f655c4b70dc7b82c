"""The provider: validation of the shared credentials (endpoints, key, served model)."""

from collections.abc import Iterable, Mapping

from dify_plugin import ModelProvider
from dify_plugin.entities.model import ModelType
from dify_plugin.entities.model.message import UserPromptMessage
from dify_plugin.errors.model import CredentialsValidateFailedError

from deepseek_engine import EngineError, parse_settings
from deepseek_engine.errors import public_message, report_unexpected, secret_scope
from deepseek_engine.settings import credential_secrets
from deepseek_engine.validation import validate_endpoints
from deepseek_engine.warmup import warm_up


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
            warm_up(found, credentials, ask=self._ask, catalogue=self._catalogue, settings=settings)

    def _catalogue(self) -> list[str]:
        return [m.model for m in self.get_model_instance(ModelType.LLM).predefined_models()]

    def _ask(self, model: str, credentials: Mapping, prompt: str, parameters: dict) -> Iterable[object]:
        """A user's request as Dify makes it (the SDK's invoke, streamed): the path warm-up runs."""
        return self.get_model_instance(ModelType.LLM).invoke(
            model, credentials, [UserPromptMessage(content=prompt)], parameters, None, None, True, None)
