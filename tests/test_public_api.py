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


def _in_a_new_interpreter(code: str) -> list[str]:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


COUNT_COLLECTIONS = ("import gc, sys\nseen = []\n"
                     "gc.callbacks.append(lambda phase, info: phase == 'start' and seen.append(info['generation']))\n")


def test_the_command_loads_with_no_collection_and_freezes_what_it_loaded():
    # Collections while the libraries load walk the same young objects again and again (over a hundred of them
    # for `ingestd --version`); what loading makes lives as long as the process, so it is frozen out of later ones.
    code = COUNT_COLLECTIONS + (
        "sys.argv = ['ingestd', '--version']\n"
        "try:\n    import runpy; runpy.run_module('ingestd', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(len(seen), gc.get_freeze_count(), gc.isenabled())")
    collections, frozen, enabled = _in_a_new_interpreter(code)[-3:]
    assert int(collections) <= 3  # argparse, after loading
    assert int(frozen) > 10_000
    assert enabled == "True"


def test_importing_the_package_leaves_the_programs_collector_as_it_was():
    code = COUNT_COLLECTIONS + (
        "import ingestd\nfrom ingestd import StreamClient, load_config\n"
        "print(gc.isenabled(), gc.get_freeze_count())\n"
        "gc.disable()\nimport ingestd.queue\nprint(gc.isenabled())")
    assert _in_a_new_interpreter(code) == ["True", "0", "False"]
