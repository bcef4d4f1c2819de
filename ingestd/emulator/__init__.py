"""A faithful local stand-in for the AIOZ Stream media API, for tests and ``ingestd demo``."""

from ._server import Emulator, RequestRecord
from ._settings import Account, EmulatorSettings, Faults

__all__ = ["Account", "Emulator", "EmulatorSettings", "Faults", "RequestRecord"]
