"""dmuc: XEP-0282 distributed multi-user chat for Prosody."""

__version__ = "0.1.0"
