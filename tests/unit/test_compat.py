"""The wokkel/Twisted shim (dmuc.compat, ralphm/wokkel#31): every wokkel module imports."""

import importlib

import pytest

from dmuc import compat  # noqa: F401

# The ones dmuc uses, and the ones the shim exists for (they fail without it).
WOKKEL_MODULES = ["component", "subprotocols", "generic", "disco", "data_form", "ping", "muc",
                  "xmppim", "delay"]


@pytest.mark.parametrize("name", WOKKEL_MODULES)
def test_wokkel_module_imports(name: str) -> None:
    module = importlib.import_module(f"wokkel.{name}")
    assert module.__name__ == f"wokkel.{name}"


def test_the_twistd_plugins_are_found() -> None:
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    names = {p.tapname for p in getPlugins(IServiceMaker)}
    assert {"dmuc-master", "dmuc-slave"} <= names
