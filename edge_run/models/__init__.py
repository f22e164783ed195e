"""Models: the shipped catalog (:mod:`.catalog`), its fetcher (:mod:`.fetch`), local GGUFs (:mod:`.local`).

Nothing is re-exported here: ``fetch`` is both a module and its main function, and importing
from the submodules keeps the two apart.
"""

from __future__ import annotations

__all__: list[str] = []
