"""The provider: validation of the shared credentials (endpoints, key, served model)."""

from collections.abc import Mapping

from dify_plugin import ModelProvider
from dify_plugin.errors.model import CredentialsValidateFailedError

from deepseek_engine import EngineError, parse_settings
from deepseek_engine.validation import validate_endpoints


class DeepSeekSelfHostedProvider(ModelProvider):
    def validate_provider_credentials(self, credentials: Mapping) -> None:
        try:
            settings = parse_settings(credentials)
            validate_endpoints(settings, wanted=settings.served_model_name, catalogue=None)
        except EngineError as e:
            raise CredentialsValidateFailedError(str(e)) from None
