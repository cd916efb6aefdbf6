"""Which builder makes which image: recipe name -> `ImageBuilder`.

A recipe is usable when it is registered here and ``images/<name>/`` exists. Only ``tiny``
exists so far; the Debian cloud image will register its own builder next to it.
"""

from __future__ import annotations

from lab.storage.images.builder import ImageBuilder
from lab.storage.images.tiny import TinyBuilder

BUILDERS: dict[str, ImageBuilder] = {
    "tiny": TinyBuilder(),
}


def register_builder(name: str, builder: ImageBuilder) -> None:
    """Add (or replace) the builder of recipe `name`."""
    BUILDERS[name] = builder
