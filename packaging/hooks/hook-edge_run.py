"""PyInstaller hook for edge-run: data files that are read by path, not imported.

* ``edge_run/api/web/static``: the web page, served from disk by Litestar.
* ``edge_run/models/catalog.toml``: the model catalog, package data read with ``importlib.resources``.
"""

from __future__ import annotations

from pathlib import Path

import edge_run

_package = Path(edge_run.__file__).parent

datas = [
    (str(_package / "api" / "web" / "static"), "edge_run/api/web/static"),
    (str(_package / "models" / "catalog.toml"), "edge_run/models"),
]
