"""The versions installed are the ones constraints.txt pins (the README's commands install through it)."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging"))
import lock  # noqa: E402


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def required(root: str = "edge-run", extras: tuple[str, ...] = ("test", "package")) -> dict[str, str]:
    """Every distribution edge-run's runtime and extras pull in, as installed here: ``{name: version}``."""
    found: dict[str, str] = {}
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement whose marker keeps it off this platform
        key = _canonical(dist.metadata["Name"])
        if key != "edge-run":
            found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *wanted)):
                seen = _canonical(req.name) in found and not req.extras
                if not seen:
                    todo.append((req.name, tuple(req.extras)))
    return found


def test_every_installed_dependency_is_the_pinned_version() -> None:
    pins = lock.pinned()
    have = {name: v for name, v in required().items() if name not in lock.NOT_PINNED}
    wrong = {name: (v, pins.get(name)) for name, v in have.items() if pins.get(name) != v}
    assert not wrong, f"installed (left) is not what constraints.txt pins (right): {wrong}; use -c constraints.txt"
    assert {"llama-cpp-python", "litestar", "msgspec", "openai", "pyinstaller"} <= have.keys()


def test_the_lock_parser_reads_pins_and_the_diff_names_both_sides() -> None:
    pins = lock.pinned("# comment\nmsgspec==0.23.0\nLitestar_HTMX==0.5.0  # why\n\n")
    assert pins == {"msgspec": "0.23.0", "litestar-htmx": "0.5.0"}
    assert lock.diff({"msgspec": "0.24.0"}, pins) == ["-litestar-htmx==0.5.0", "-msgspec==0.23.0", "+msgspec==0.24.0"]
    assert lock.diff(pins, pins) == []
