"""The serving layer: what every wire format shares, between the HTTP routes and the engine.

The internal request (:mod:`.request`), its checks and prompt (:mod:`.prompt`), its sampling settings
(:mod:`.sampling`), tool calling (:mod:`.tools`, and :mod:`.calls` for reading each model family's calls), the
answer read back (:mod:`.assembly`) and its token counts (:mod:`.metering`). Nothing here imports Litestar or llama_cpp.
"""

from __future__ import annotations

__all__: list[str] = []
