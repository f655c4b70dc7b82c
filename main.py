import importlib

from dify_plugin import DifyPluginEnv, Plugin

plugin = Plugin(DifyPluginEnv(MAX_REQUEST_TIMEOUT=1800))


# what the SDK imports lazily when it opens its first session
_LAZY_SDK_MODULES = (
    "dify_plugin.invocations.app",
    "dify_plugin.invocations.app.chat",
    "dify_plugin.invocations.app.completion",
    "dify_plugin.invocations.app.workflow",
    "dify_plugin.invocations.file",
    "dify_plugin.invocations.model.llm",
    "dify_plugin.invocations.model.llm_structured_output",
    "dify_plugin.invocations.model.moderation",
    "dify_plugin.invocations.model.rerank",
    "dify_plugin.invocations.model.speech2text",
    "dify_plugin.invocations.model.text_embedding",
    "dify_plugin.invocations.model.tts",
    "dify_plugin.invocations.storage",
    "dify_plugin.invocations.tool",
    "dify_plugin.invocations.workflow_node.parameter_extractor",
    "dify_plugin.invocations.workflow_node.question_classifier",
)


def _preload() -> None:
    """One-time costs moved from the first request to start-up: the modules the SDK imports
    lazily when it opens its first session, and the default pooled HTTP client, whose SSL context
    loads the system CA store even for http:// endpoints (figures: docs/performance.md)."""
    for name in _LAZY_SDK_MODULES:
        importlib.import_module(name)
    from deepseek_engine.tls import TLSConfig, build_context
    from deepseek_engine.transport import CLIENTS

    tls = TLSConfig()
    CLIENTS.get(tls.key, lambda: build_context(tls))


if __name__ == "__main__":
    _preload()
    plugin.run()
