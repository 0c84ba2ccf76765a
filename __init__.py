"""ComfyUI-LatentSync: ByteDance LatentSync 1.5/1.6 lip-sync as ComfyUI nodes (V3 schema).

The lip-sync itself is the plain-PyTorch library in `latentsync/`; `nodes/` adapts it to ComfyUI. Example workflows
are in `workflows/` (served by ComfyUI as this pack's templates), node help pages and the small frontend extension
in `web/`.
"""
from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

WEB_DIRECTORY = "./web"


class LatentSyncExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .nodes import all_nodes  # noqa: PLC0415

        return all_nodes()


async def comfy_entrypoint() -> LatentSyncExtension:
    return LatentSyncExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
