"""ingestd: a watch-folder ingestion daemon for the AIOZ Stream media API.

The daemon is the ``ingestd`` command; what other programs may use is listed in ``__all__``:
the API client, the config loader, and the errors they raise.
"""

# First, so the modules below can read it while the package is still being imported.
__version__ = "0.1.0"

import gc

# Loading makes objects that live as long as the process; collecting while they are made only walks them over and
# over. The collector is left as the importing program had it.
_collecting = gc.isenabled()
gc.disable()
try:
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
finally:
    if _collecting:
        gc.enable()
    del _collecting

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
