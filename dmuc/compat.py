"""Repairs wokkel 18.0.0 on current Twisted; import this before any wokkel module.

wokkel 18.0.0 (the last release, 2018) imports ``_PY3`` from ``twisted.python.compat``
(removed in Twisted 21.2) and ``twisted.python.constants`` (moved to the ``constantly``
package).  Upstream issue: ralphm/wokkel#31.  This is the one place that patches it.
"""

import sys

import constantly
import twisted.python.compat

if not hasattr(twisted.python.compat, "_PY3"):
    twisted.python.compat._PY3 = True  # type: ignore[attr-defined]
sys.modules.setdefault("twisted.python.constants", constantly)
