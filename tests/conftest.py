"""Shared test set-up: every test starts with freshly loaded plugins and its own cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from essencekit import plugins

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("essencekit-home")
    monkeypatch.setenv("ESSENCEKIT_HOME", str(home))
    for name in ("ESSENCEKIT_BACKEND", "ESSENCEKIT_LOAD_PLUGINS", "ESSENCEKIT_OFFLINE", "ESSENCEKIT_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def register_plugin():
    """Register a plugin object (a module or class with hookimpls) for one test."""

    def register(plugin, name: str):
        plugins.register_plugin(plugin, name)
        return plugin

    return register
