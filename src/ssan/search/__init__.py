"""Search your own gallery with free text: FAISS index, searcher, web service and page.

- :func:`build_index` (``ssan index``): encode a folder of images or a prepared split into a
  :class:`GalleryIndex`, exact (FAISS inner product = SSAN similarity) or compressed (IVF-PQ, HNSW).
- :class:`Searcher` (``ssan search``): load the model once, rank the gallery for a query,
  report unknown words and the per-part word attention.
- :func:`create_app` (``ssan serve``): the FastAPI service and its web page (needs ``ssan[serve]``).
"""

from ssan.search.ann import KINDS, IndexSpec
from ssan.search.builder import build_index
from ssan.search.errors import GalleryIndexError, QueryError
from ssan.search.index import GalleryIndex
from ssan.search.searcher import Searcher, attention_by_part, top_words

__all__ = [
    "KINDS",
    "GalleryIndex",
    "GalleryIndexError",
    "IndexSpec",
    "QueryError",
    "Searcher",
    "attention_by_part",
    "build_index",
    "create_app",
    "top_words",
]


def __getattr__(name):
    if name == "create_app":  # FastAPI is an optional extra: import it only when asked
        from ssan.search.app import create_app

        return create_app
    raise AttributeError(f"module 'ssan.search' has no attribute {name!r}")
