"""The pinned versions every install goes through: ``constraints.txt`` at the repository's root.

The README's commands, ``.ci/run`` and the binary build install with ``-c constraints.txt``, so a fresh
machine resolves exactly the versions CI passed with. Upgrades are deliberate:

    python packaging/lock.py check     # this environment against the lock; prints the diff, exit 1 if any
    python packaging/lock.py refresh   # newest versions in a fresh venv, the whole suite on them, then the new lock

``refresh`` writes the lock only when the suite passes on the new versions; commit it with what it changed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

__all__ = ["LOCK", "diff", "installed", "pinned"]

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
# what pip freeze leaves out, and edge-run itself (installed from the checkout)
NOT_PINNED = {"pip", "setuptools", "wheel", "distribute", "edge-run"}
HEADER = """\
# The exact versions CI passed with, for the runtime and every extra (pip freeze of `pip install -e '.[test]'`,
# which includes `.[package]`). Every install goes through it: pip install -c constraints.txt ...
# Refresh deliberately with `python packaging/lock.py refresh` (newest versions, the whole suite, then this file).
"""


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def pinned(text: str | None = None) -> dict[str, str]:
    """``{canonical name: version}`` from the lock's ``name==version`` lines."""
    text = LOCK.read_text(encoding="utf-8") if text is None else text
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[_canonical(name)] = version.split(";", 1)[0].strip()
    return out


def installed() -> dict[str, str]:
    """``{canonical name: version}`` of this interpreter's distributions, less those never pinned."""
    found = {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return {name: version for name, version in found.items() if name not in NOT_PINNED}


def diff(have: dict[str, str], lock: dict[str, str]) -> list[str]:
    """Lines in the shape of a unified diff (``-`` the lock, ``+`` this environment); empty when they agree."""
    lines = []
    for name in sorted(have.keys() | lock.keys()):
        if have.get(name) != lock.get(name):
            if name in lock:
                lines.append(f"-{name}=={lock[name]}")
            if name in have:
                lines.append(f"+{name}=={have[name]}")
    return lines


def check() -> int:
    lines = diff(installed(), pinned())
    print(f"pip freeze against {LOCK.name}: {'no difference' if not lines else f'{len(lines)} lines differ'}")
    for line in lines:
        print(line)
    return 1 if lines else 0


def refresh() -> int:
    """The newest versions the index offers, in a fresh venv; the suite must pass before the lock is written."""
    with tempfile.TemporaryDirectory(prefix="edge-run-lock-") as tmp:
        py = Path(tmp) / "venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
        subprocess.run([sys.executable, "-m", "venv", str(py.parents[1])], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--upgrade", "-e", f"{ROOT}[test]"], check=True)
        if subprocess.run([str(py), "-m", "pytest"], cwd=ROOT).returncode != 0:
            print("the suite fails on the newest versions: the lock is unchanged", file=sys.stderr)
            return 1
        freeze = subprocess.run([str(py), "-m", "pip", "freeze", "--exclude-editable"], check=True,
                                capture_output=True, text=True).stdout  # fmt: skip
    lines = sorted((line for line in freeze.splitlines() if line and not line.startswith("#")), key=str.lower)
    LOCK.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {LOCK} ({len(lines)} pins): review `git diff {LOCK.name}` and commit it")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["check", "refresh"])
    return check() if ap.parse_args().command == "check" else refresh()


if __name__ == "__main__":
    sys.exit(main())
