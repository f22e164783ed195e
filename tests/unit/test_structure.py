"""The house keeps its shape: no module over 400 lines, no function over 60, no import cycle, no unused
public name (``tests/structure.py`` says which, and runs alone too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "structure.py"


def test_the_structure_holds() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout


def test_the_checker_finds_what_it_checks(tmp_path: Path) -> None:
    """A cycle through a lazy import, an oversized module and function, and an unused public name."""
    pkg = tmp_path / "edge_run"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text('__all__ = ["used", "lonely"]\n\nfrom edge_run.b import x\n\n\ndef used():\n'
                              "    return x\n\n\ndef lonely():\n    pass\n" + "\n" * 400)  # fmt: skip
    (pkg / "b.py").write_text("x = 1\n\n\ndef f():\n    from edge_run.a import used\n\n    return used()"
                              + "\n    pass" * 61 + "\n")  # fmt: skip
    (tmp_path / "pyproject.toml").write_text("")
    code = f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import structure as s; " \
           f"from pathlib import Path; s.ROOT = Path({str(tmp_path)!r}); s.PACKAGE = s.ROOT / 'edge_run'; " \
           "print('\\n'.join(s.findings()))"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "edge_run/a.py: 411 lines" in out
    assert "edge_run/b.py:4 f: 65 lines" in out
    assert "public name lonely is used nowhere" in out and "public name used " not in out
    assert "import cycle: edge_run.a -> edge_run.b" in out
