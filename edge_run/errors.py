"""Domain errors. Each carries its HTTP status and OpenAI error ``type``/``code``.

They are mapped to responses in one place: :mod:`edge_run.api.http.errors`.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ClientDisconnected",
    "ContextLengthExceeded",
    "EdgeRunError",
    "EngineFailure",
    "HostNotAllowed",
    "InvalidRequest",
    "ModelBusy",
    "ModelLoading",
    "ModelNotFound",
    "ModelUnavailable",
    "NotInLibrary",
    "Overloaded",
    "PullCancelled",
    "RateLimited",
    "ServerDraining",
    "UnsupportedMediaType",
    "UnsupportedTask",
    "UpstreamUnavailable",
]


class EdgeRunError(Exception):
    """Base of every error a client may see."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retry_after: int | None = None  # seconds, sent as ``Retry-After`` when set

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(EdgeRunError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"

    def __init__(self, message: str, *, param: str = "messages") -> None:
        super().__init__(message, param=param)


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class UnsupportedTask(InvalidRequest):
    """A model asked for what it does not do: chat from an embedder, embeddings or rerank from the wrong kind."""

    code = "model_not_supported"

    def __init__(self, model: str, kind: str, task: str) -> None:
        article = "an" if kind[0] in "aeiou" else "a"
        super().__init__(f"model `{model}` is {article} {kind} model: it does not serve {task}", param="model")


class AuthenticationError(EdgeRunError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ModelNotFound(EdgeRunError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or is not served here.", param="model")
        self.model = model


class NotInLibrary(EdgeRunError):
    """A pull names no library model (by id or Ollama name) and is no ``hf:`` reference either."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"`{name}` is not in the library (GET /v1/library lists it), nor an `hf:OWNER/REPO[:QUANT]` reference",
            param="model",
        )


class ModelBusy(EdgeRunError):
    """A model cannot be changed now: it is answering requests (unload, delete), or being pulled."""

    status = 409
    type = "invalid_request_error"
    code = "model_busy"


class PullCancelled(EdgeRunError):
    """A pull was cancelled (``DELETE /v1/library/pulls/{model}``, or an Ollama client that left). Raised on the
    download's thread from its progress report; a client that waited on the pull gets a 409."""

    status = 409
    type = "invalid_request_error"
    code = "pull_cancelled"


class Overloaded(EdgeRunError):
    """The request queue is full; the client should retry later."""

    status = 429
    type = "rate_limit_exceeded"
    code = "server_overloaded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(EdgeRunError):
    """A key went over one of its limits; ``headers`` are the ``x-ratelimit-*`` ones to send."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.type = kind  # "requests" or "tokens", as OpenAI says which limit was hit
        self.retry_after = retry_after
        self.headers = headers


class ModelLoading(EdgeRunError):
    status = 503
    type = "server_error"
    code = "model_loading"


class ModelUnavailable(EdgeRunError):
    """A model cannot be loaded now: its load failed (the reason is said), or it does not fit beside busy ones."""

    status = 503
    type = "server_error"
    code = "model_unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message, param="model")
        self.retry_after = retry_after


class EngineFailure(EdgeRunError):
    """Inference failed inside llama.cpp; details go to the log, not the client."""

    status = 500
    type = "server_error"
    code = "engine_failure"


class ClientDisconnected(EdgeRunError):
    """The client went away before its answer was ready; nothing reaches it (499, as nginx logs it)."""

    status = 499
    type = "invalid_request_error"
    code = "client_disconnected"


class UpstreamUnavailable(EdgeRunError):
    """No upstream replica of a model answered: 502 (unreachable), 503 (all failing) or 504 (timed out)."""

    type = "server_error"
    code = "upstream_unavailable"

    def __init__(self, message: str, *, status: int, retry_after: int | None = None) -> None:
        super().__init__(message, param="model")
        self.status = status
        self.retry_after = retry_after


class HostNotAllowed(EdgeRunError):
    """A ``Host`` header that names another machine (see ``api/http/hosts.py``)."""

    status = 403
    type = "invalid_request_error"
    code = "host_not_allowed"


class ServerDraining(EdgeRunError):
    """A request that arrives while the server stops: the running answers finish, new ones wait for a restart."""

    status = 503
    type = "server_error"
    code = "shutting_down"
    retry_after = 5
