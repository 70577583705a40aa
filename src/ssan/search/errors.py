"""Errors of the search package (all :class:`ssan.errors.SsanError`: one line, exit status 2)."""

from __future__ import annotations

from ssan.errors import SsanError


class QueryError(SsanError):
    """A query that cannot be searched (empty, no words, only unknown words, too long...)."""


class GalleryIndexError(SsanError):
    """A missing, corrupted or incompatible gallery index (or a mismatched checkpoint)."""


class StoreUnavailable(SsanError):
    """The track database cannot be reached now (the service answers 503 and recovers when it is back)."""
