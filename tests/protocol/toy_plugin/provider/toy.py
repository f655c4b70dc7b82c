from dify_plugin import ModelProvider
from dify_plugin.errors.model import CredentialsValidateFailedError


class ToyProvider(ModelProvider):
    def validate_provider_credentials(self, credentials: dict) -> None:
        if credentials.get("api_key") != "good":
            raise CredentialsValidateFailedError("invalid api_key (toy expects 'good')")
