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

import click
import pytest

from edge_run import cli
from edge_run.errors import ModelNotFound
from edge_run.models.catalog import load_catalog
from edge_run.paths import Paths

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
    entry = load_catalog().default_entry
    (meipass / "models").mkdir()
    (meipass / "models" / entry.file).write_bytes(b"GGUF")
    for spec in (None, "default", entry.id):
        assert cli._frozen_model(spec, paths, load_catalog()) == (entry.id, meipass / "models" / entry.file)


def test_frozen_binary_without_a_model_says_to_pass_one(frozen):
    _, paths = frozen
    with pytest.raises(click.ClickException, match="--model PATH"):
        cli._frozen_model(None, paths, load_catalog())
    with pytest.raises(ModelNotFound):
        cli._frozen_model("no-such-model", paths, load_catalog())


def test_frozen_binary_prefers_a_given_gguf(frozen, tmp_path):
    _, paths = frozen
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert cli._frozen_model(str(gguf), paths, load_catalog()) == ("mine", gguf.resolve())


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
