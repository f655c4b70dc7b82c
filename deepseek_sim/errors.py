"""Error answers as each server words them: the JSON envelope of vLLM and SGLang, and the
messages and pages the simulator sends when no caller chose them."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from .httpio import dumps, send

ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}
DEFAULT_MESSAGES = {
    429: "rate limited",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def error_body(flavor: str, status: int, message: str, type_: str | None = None, param: str | None = None) -> bytes:
    type_ = type_ or ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    if flavor == "sglang":
        env = {"object": "error", "message": message, "type": type_, "param": param, "code": status}
    else:
        env = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return dumps(env).encode()


async def send_error(writer: asyncio.StreamWriter, flavor: str, status: int, message: str, keep: bool,
                     type_: str | None = None, param: str | None = None) -> bool:
    return await send(writer, status, error_body(flavor, status, message, type_, param), keep)


def http_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
