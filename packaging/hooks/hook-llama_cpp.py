"""PyInstaller hook for llama-cpp-python: its shared libraries are loaded with ctypes.

``llama_cpp/llama_cpp.py`` opens ``llama_cpp/lib/libllama.so`` (``.dylib``, ``.dll``) by path at
import time, so PyInstaller's import analysis never sees them and the frozen app fails with
"Shared library with base name 'llama' not found". Collect the folder into the same place.
"""

from __future__ import annotations

import re
from pathlib import Path

from PyInstaller.utils.hooks import get_package_paths

_, package_dir = get_package_paths("llama_cpp")
lib_dir = Path(package_dir) / "lib"

# Wheels cannot hold symlinks, so Linux builds ship each library three times (libggml.so,
# libggml.so.0, libggml.so.0.9.4). ctypes opens the bare name; the dynamic loader wants the
# one-number soname. The fully versioned copy is never opened.
_FULL_VERSION = re.compile(r"\.so\.\d+\.\d+")
_LIBRARY = re.compile(r"\.(so(\.\d+)*|dylib|dll)$")

binaries = []
datas = []
for path in sorted(lib_dir.iterdir()) if lib_dir.is_dir() else []:
    if not path.is_file() or _FULL_VERSION.search(path.name):
        continue
    # Libraries are binaries (their own dependencies get collected too); anything else, such as
    # Metal's default.metallib / ggml-metal.metal on macOS, is data next to them.
    (binaries if _LIBRARY.search(path.name) else datas).append((str(path), "llama_cpp/lib"))

# The server extra (FastAPI, sse-starlette, ...) is not edge-run's and is not installed.
excludedimports = ["llama_cpp.server"]
