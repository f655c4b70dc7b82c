"""The SDK's OpenAI-compatible LLM, unchanged: the peer this plugin is measured against.

The simulator it talks to must put ``usage`` on the final chunk (``usage="always_on_finish"``):
this class never asks for ``stream_options.include_usage`` and would otherwise count tokens with
tiktoken's GPT-2 encoding, which downloads its vocabulary on first use.
"""

from dify_plugin.interfaces.model.openai_compatible.llm import OAICompatLargeLanguageModel


class OAICompatLLM(OAICompatLargeLanguageModel):
    pass
