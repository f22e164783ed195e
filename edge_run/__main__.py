"""Entry for ``python -m edge_run`` and the frozen binary."""

from __future__ import annotations

from edge_run.cli import main

if __name__ == "__main__":
    main()
