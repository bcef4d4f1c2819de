"""ingestd: a watch-folder ingestion daemon for the AIOZ Stream media API.

The daemon is the ``ingestd`` command; what other programs may use is listed in ``__all__``:
the API client, the config loader, and the errors they raise.
"""

# First, so the modules below can read it while the package is still being imported.
__version__ = "0.1.0"

from .client import Part, StreamClient, plan_parts
from .config import Config, load_config
from .errors import (
    APIConnectionError,
    APIError,
    AuthError,
    ConfigError,
    ConfigProblem,
    IngestdError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    RenderError,
    ServerError,
    SourceChangedError,
    TransientError,
)
from .media_schema import CreateRequest, UpdateRequest
from .models import Cost, Media, MediaPage

__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthError",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "Cost",
    "CreateRequest",
    "IngestdError",
    "Media",
    "MediaPage",
    "NotFoundError",
    "Part",
    "RateLimitedError",
    "RejectedError",
    "RenderError",
    "ServerError",
    "SourceChangedError",
    "StreamClient",
    "TransientError",
    "UpdateRequest",
    "__version__",
    "load_config",
    "plan_parts",
]
