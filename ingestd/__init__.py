"""ingestd: a watch-folder ingestion daemon for the AIOZ Stream media API."""

__version__ = "0.1.0"
__all__ = ["__version__"]
