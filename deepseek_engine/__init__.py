"""The DeepSeek Self-Hosted engine: transport, SSE, reasoning, tool calls, retries, health.

Plain Python with no Dify imports, testable alone; ``models/llm/llm.py`` adapts it to Dify.
"""

from .answer import AnswerAssembler, Piece
from .client import ChatClient
from .completion import Completion, Finished
from .discovery import DIRECTORY, ServedModel, pick_served_model
from .errors import (
                     AuthError,
                     BadRequestError,
                     ConfigError,
                     ConnectError,
                     EngineError,
                     RateLimitError,
                     ServerError,
                     StreamBrokenError,
                     TimeoutError_,
)
from .protocol import ChatDelta, build_body
from .settings import Settings, parse_settings

__all__ = [
    "AnswerAssembler", "Piece", "ChatClient", "Completion", "Finished", "DIRECTORY", "ServedModel",
    "pick_served_model",
    "AuthError", "BadRequestError", "ConfigError", "ConnectError", "EngineError", "RateLimitError",
    "ServerError", "StreamBrokenError", "TimeoutError_", "ChatDelta", "build_body", "Settings",
    "parse_settings",
]
