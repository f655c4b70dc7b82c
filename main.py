from dify_plugin import DifyPluginEnv, Plugin

plugin = Plugin(DifyPluginEnv(MAX_REQUEST_TIMEOUT=1800))


def _preload() -> None:
    """One-time costs moved from the first request to start-up: the modules the SDK imports
    lazily when it opens its first session (~10-15 ms), and the default pooled HTTP client,
    whose SSL context loads the system CA store (~70 ms) even for http:// endpoints."""
    import dify_plugin.invocations.app  # noqa: F401
    import dify_plugin.invocations.app.chat  # noqa: F401
    import dify_plugin.invocations.app.completion  # noqa: F401
    import dify_plugin.invocations.app.workflow  # noqa: F401
    import dify_plugin.invocations.file  # noqa: F401
    import dify_plugin.invocations.model.llm  # noqa: F401
    import dify_plugin.invocations.model.llm_structured_output  # noqa: F401
    import dify_plugin.invocations.model.moderation  # noqa: F401
    import dify_plugin.invocations.model.rerank  # noqa: F401
    import dify_plugin.invocations.model.speech2text  # noqa: F401
    import dify_plugin.invocations.model.text_embedding  # noqa: F401
    import dify_plugin.invocations.model.tts  # noqa: F401
    import dify_plugin.invocations.storage  # noqa: F401
    import dify_plugin.invocations.tool  # noqa: F401
    import dify_plugin.invocations.workflow_node.parameter_extractor  # noqa: F401
    import dify_plugin.invocations.workflow_node.question_classifier  # noqa: F401
    from deepseek_engine.tls import TLSConfig, build_context
    from deepseek_engine.transport import CLIENTS

    tls = TLSConfig()
    CLIENTS.get(tls.key, lambda: build_context(tls))


if __name__ == "__main__":
    _preload()
    plugin.run()
