from collections.abc import Mapping

from dify_plugin import ModelProvider


class OAICompatProvider(ModelProvider):
    def validate_provider_credentials(self, credentials: Mapping) -> None:
        pass  # customizable models are validated per model (the SDK class sends "ping")
