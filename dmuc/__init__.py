"""dmuc: XEP-0282 distributed multi-user chat for Prosody."""

# The wokkel/Twisted shim (ralphm/wokkel#31) must run before any wokkel import: a package
# body runs before any of its modules, so every dmuc module that imports wokkel is covered.
from dmuc import compat as _compat  # noqa: F401

__version__ = "0.1.0"
