"""PyInstaller hook for edge-run: data files that are read by path, not imported.

* ``edge_run/api/web/static``: the web page, served from disk by Litestar.
* ``edge_run.catalog``: the model catalog, installed from the repository's ``models/`` folder and
  read with ``importlib.resources``. Nothing imports it where the analysis could see it, and an
  editable install maps it with a finder the analysis cannot follow, so the package travels as
  files (its ``__init__.py`` included): the frozen app imports it from the unpacked folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import edge_run

_package = Path(edge_run.__file__).parent
_catalog = resources.files("edge_run.catalog")

datas = [
    (str(_package / "api" / "web" / "static"), "edge_run/api/web/static"),
    (str(_catalog / "catalog.toml"), "edge_run/catalog"),
    (str(_catalog / "__init__.py"), "edge_run/catalog"),
]
