"""The package's public surface is small and deliberate."""

import ingestd
from ingestd import errors

EXPECTED = {
    "__version__", "StreamClient", "Part", "plan_parts", "Config", "load_config", "CreateRequest", "UpdateRequest",
    "Media", "MediaPage", "Cost", "IngestdError", "ConfigError", "ConfigProblem", "APIError", "TransientError",
    "APIConnectionError", "RateLimitedError", "ServerError", "AuthError", "RejectedError", "NotFoundError",
    "RenderError", "SourceChangedError",
}


def test_all_is_exactly_the_public_surface():
    assert set(ingestd.__all__) == EXPECTED
    assert len(ingestd.__all__) == len(EXPECTED)
    for name in ingestd.__all__:
        assert getattr(ingestd, name) is not None


def test_errors_are_grouped_by_what_the_caller_does():
    assert issubclass(errors.APIConnectionError, errors.TransientError)
    assert issubclass(errors.RateLimitedError, errors.TransientError)
    assert issubclass(errors.ServerError, errors.TransientError)
    assert issubclass(errors.NotFoundError, errors.RejectedError)
    assert not issubclass(errors.AuthError, errors.TransientError | errors.RejectedError)
    assert all(issubclass(getattr(ingestd, n), errors.IngestdError) for n in ingestd.__all__ if n.endswith("Error"))


def test_version_matches_the_package_metadata():
    from importlib.metadata import version

    assert ingestd.__version__ == version("ingestd")
