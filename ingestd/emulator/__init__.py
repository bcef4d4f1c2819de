"""A faithful local stand-in for the AIOZ Stream media API, for tests and ``ingestd demo``."""

from typing import TYPE_CHECKING

from ._settings import Account, EmulatorSettings, Faults

if TYPE_CHECKING:
    from ._server import Emulator, RequestRecord

__all__ = ["Account", "Emulator", "EmulatorSettings", "Faults", "RequestRecord"]


def __getattr__(name: str) -> object:
    # The server (http.server and the store) is loaded when used: every ingestd command builds the emulator's
    # arguments, and only `ingestd emulator` and the tests need the server itself.
    if name in ("Emulator", "RequestRecord"):
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
