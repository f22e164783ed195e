"""Settings layering: defaults < config.toml < EDGE_RUN_* env < flags; paths under EDGE_RUN_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_run.config import ConfigError, load_settings, physical_cores
from edge_run.paths import Paths


def paths_in(tmp_path) -> Paths:
    return Paths.resolve({"EDGE_RUN_HOME": str(tmp_path)})


def test_home_relocates_everything(tmp_path):
    p = paths_in(tmp_path)
    for d in (p.config_dir, p.data_dir, p.log_dir, p.models_dir):
        assert d.is_relative_to(tmp_path)


def test_defaults(tmp_path):
    s = load_settings(paths_in(tmp_path), environ={})
    assert (s.host, s.port, s.auth, s.preload, s.model) == ("127.0.0.1", 8080, True, [], [])
    assert (s.keep_alive, s.max_loaded, s.memory_budget) == (300, 2, None)


def test_layers_override_in_order(tmp_path):
    p = paths_in(tmp_path)
    p.config_dir.mkdir(parents=True)
    p.config_file.write_text('port = 9000\nslots = 3\nctx = 256\nhost = "127.0.0.2"\n')
    env = {"EDGE_RUN_CTX": "512", "EDGE_RUN_PORT": "9100"}
    s = load_settings(p, environ=env, overrides={"port": 9200, "slots": None})
    assert (s.slots, s.ctx, s.port, s.host) == (3, 512, 9200, "127.0.0.2")


def test_unknown_or_bad_settings_are_refused(tmp_path):
    p = paths_in(tmp_path)
    p.config_dir.mkdir(parents=True)
    p.config_file.write_text("sltos = 3\n")
    with pytest.raises(ConfigError, match="sltos"):
        load_settings(p, environ={})
    p.config_file.write_text("")
    with pytest.raises(ConfigError, match="port"):
        load_settings(p, environ={"EDGE_RUN_PORT": "eighty"})
    p.config_file.write_text("port = [")
    with pytest.raises(ConfigError):
        load_settings(p, environ={})


def test_threads_default_never_exceeds_the_cores():
    import os

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_allowed_hosts_from_every_layer(tmp_path):
    paths = paths_in(tmp_path)
    assert load_settings(paths, environ={}).allowed_hosts == []
    assert load_settings(paths, environ={"EDGE_RUN_ALLOWED_HOSTS": "a.lan, b.lan"}).allowed_hosts == ["a.lan", "b.lan"]
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text('allowed_hosts = ["c.lan"]\n')
    assert load_settings(paths, environ={}).allowed_hosts == ["c.lan"]
    assert load_settings(paths, environ={}, overrides={"allowed_hosts": ["d.lan"]}).allowed_hosts == ["d.lan"]


def test_cors_origins_from_the_environment(tmp_path):
    environ = {"EDGE_RUN_CORS_ORIGINS": "https://a.example,https://b.example"}
    assert load_settings(paths_in(tmp_path), environ=environ).cors_origins == ["https://a.example", "https://b.example"]


def test_model_tables_preloads_and_unloading_settings(tmp_path):
    p = paths_in(tmp_path)
    p.config_dir.mkdir(parents=True)
    p.config_file.write_text(
        'keep_alive = -1\nmemory_budget = 1.5\n'
        '[[model]]\nid = "acme/one"\npath = "/m/one.gguf"\nctx = 512\ngpu_layers = "auto"\n'
        '[[model]]\nid = "acme/two"\npath = "/m/two.gguf"\nslots = 1\nchat_template = "{{ messages }}"\n'
    )
    s = load_settings(p, environ={"EDGE_RUN_PRELOAD": "acme/one, acme/two", "EDGE_RUN_MAX_LOADED": "1"})
    assert (s.keep_alive, s.memory_budget, s.max_loaded, s.preload) == (-1, 1.5, 1, ["acme/one", "acme/two"])
    one, two = s.model
    assert (one.id, one.ctx, one.gpu_layers, one.slots) == ("acme/one", 512, None, None)
    assert (two.slots, two.chat_template) == (1, "{{ messages }}")
    p.config_file.write_text('[[model]]\nid = "x"\npath = "/x.gguf"\nslotz = 2\n')
    with pytest.raises(ConfigError, match="slotz"):
        load_settings(p, environ={})
    p.config_file.write_text("")
    with pytest.raises(ConfigError, match="keep_alive"):
        load_settings(p, environ={"EDGE_RUN_KEEP_ALIVE": "-2"})


def test_the_wheel_holds_every_module_and_data_file(tmp_path):
    """``pip install .`` (the README's serve command) installs the wheel, not the checkout: every module,
    the web page and the catalog must be in it. CI's editable install would not notice one missing."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"  # a copy: setuptools would reuse a stale build/ left in the checkout
    shutil.copytree(root / "edge_run", source / "edge_run", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    (wheel,) = tmp_path.glob("edge_run-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        path.relative_to(root).as_posix()
        for path in (root / "edge_run").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert wanted - shipped == set(), "pyproject.toml's packages.find or package-data misses these"
    assert {"edge_run/models/catalog.toml", "edge_run/api/web/static/index.html"} <= shipped
