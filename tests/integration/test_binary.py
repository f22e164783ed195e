"""The one-file executable.

Building takes about a minute, so the suite does not build it: ``.ci/run`` builds it after the
tests and runs ``packaging/smoke.py`` on it. Set ``EDGE_RUN_BINARY=dist/edge-run`` to run that smoke
test from here against a binary you built. What runs without a build: the frozen-only model lookup,
exercised in-process with ``sys.frozen`` / ``sys._MEIPASS`` set the way PyInstaller sets them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from edge_run import server
from edge_run.errors import ModelNotFound
from edge_run.models.catalog import load_catalog
from edge_run.models.inventory import inventory
from edge_run.paths import Paths
from tests.fakes import tiny_gguf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def frozen(tmp_path, monkeypatch):
    """Pretend to be the one-file binary, unpacked into ``tmp_path / "meipass"``."""
    meipass = tmp_path / "meipass"
    meipass.mkdir()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(meipass), raising=False)
    return meipass, Paths.resolve({"EDGE_RUN_HOME": str(tmp_path / "home")})


def test_frozen_binary_serves_the_embedded_default_model(frozen):
    meipass, paths = frozen
    catalog = load_catalog()
    entry = catalog.default_entry
    (meipass / "models").mkdir()
    (meipass / "models" / entry.file).write_bytes(b"GGUF")
    specs = inventory(paths, catalog, [], bundled=server._bundled())
    assert [(s.id, s.path) for s in specs] == [(entry.id, meipass / "models" / entry.file)]
    for wanted in ("default", entry.id):  # --model names it: preloaded, nothing downloaded
        assert server._resolve_preloads([wanted], specs, paths, catalog) == (specs, [entry.id])


def test_frozen_binary_prefers_a_given_gguf(frozen, tmp_path):
    _, paths = frozen
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(tiny_gguf())
    specs, preload = server._resolve_preloads([str(gguf)], [], paths, load_catalog())
    assert preload == ["mine"] and specs[0].path == gguf.resolve()
    with pytest.raises(ModelNotFound):
        server._resolve_preloads(["no-such-model"], [], paths, load_catalog())


@pytest.mark.integration
def test_built_binary_smoke(model_path):
    binary = os.environ.get("EDGE_RUN_BINARY")
    if not binary:
        pytest.skip("set EDGE_RUN_BINARY=dist/edge-run after `python packaging/build.py` (.ci/run does both)")
    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        import smoke
    finally:
        sys.path.remove(str(ROOT / "packaging"))
    assert smoke.main(["--binary", binary, "--model", str(model_path), "--launches", "1"]) == 0
