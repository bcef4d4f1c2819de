"""The exceptions ingestd raises, grouped by what a caller should do about them."""

from __future__ import annotations

from dataclasses import dataclass


class IngestdError(Exception):
    """Base class for every error ingestd raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '(top level)'}: {self.message}"


class ConfigError(IngestdError):
    """The config file cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class APIError(IngestdError):
    """The media API did not do what was asked."""

    def __init__(self, message: str, *, status_code: int | None = None, method: str = "", path: str = ""):
        self.message = message
        self.status_code = status_code
        self.method = method
        self.path = path
        where = f"{method} {path}".strip()
        code = f" ({status_code})" if status_code else ""
        super().__init__(f"{where}{code}: {message}" if where else message)


class TransientError(APIError):
    """Worth retrying later: the network, a 5xx, a 408 or a 429."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class APIConnectionError(TransientError):
    """No answer arrived: refused, reset, timed out. The request may still have taken effect."""


class RateLimitedError(TransientError):
    """429: the server asked us to slow down."""


class ServerError(TransientError):
    """5xx or 408 from the server."""


class AuthError(APIError):
    """401/403: the credentials are wrong or lack rights. Hold work until they are fixed."""


class RejectedError(APIError):
    """Any other 4xx: this request, as sent, will never succeed."""


class NotFoundError(RejectedError):
    """404: the media does not exist (or belongs to another account)."""


class SourceChangedError(IngestdError):
    """The file changed size while it was being uploaded; its parts must be planned again."""


class RenderError(IngestdError):
    """A rule could not be turned into a create request for a file."""

    def __init__(self, message: str, *, rule: str | None = None, variable: str | None = None):
        self.rule = rule
        self.variable = variable
        super().__init__(message)
