"""SSAN similarity (method section 3): a sum of cosines over feature terms.

S(I, T) = cos(g_I, g_T) + cos(vec P_I, vec P_T) + cos(vec R_I, vec R_T). Each term is one
cosine over the flattened feature (not per-part cosines), so S is the inner product of the
concatenations of term-wise L2-normalised features: an exact gallery index is an
inner-product index over one vector per image.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

TERMS = ("global", "parts", "relation")  # canonical order

Terms = Optional[Union[str, Sequence[str]]]


def feature_terms(feats: dict) -> list:
    """The feature terms present in ``feats``, in canonical order (other keys are ignored)."""
    return [term for term in TERMS if term in feats]


def _resolve(feats: dict, terms: Terms) -> list:
    if terms is None:
        return feature_terms(feats)
    chosen = [terms] if isinstance(terms, str) else list(terms)
    if not chosen:
        raise ValueError("terms must name at least one feature term")
    for term in chosen:
        if term not in TERMS:
            raise ValueError(f"unknown feature term {term!r}; valid: {', '.join(TERMS)}")
        if term not in feats:
            raise ValueError(f"feature term {term!r} is absent; present: {', '.join(feature_terms(feats))}")
    return chosen


def flatten_features(feats: dict, terms: Terms = None) -> torch.Tensor:
    """Concatenate term-wise L2-normalised, flattened features.

    Args:
        feats: ``{"global": B x D, "parts": B x K x D, "relation": B x K x D/2}`` (any subset).
        terms: None (every present term), one term name or a sequence of names.

    Returns:
        B x F with F the summed flattened widths; ``flatten(text) @ flatten(image).T``
        is :func:`similarity`.
    """
    chosen = _resolve(feats, terms)
    return torch.cat([F.normalize(feats[term].flatten(1), dim=1) for term in chosen], dim=1)


def similarity(image_feats: dict, text_feats: dict, terms: Terms = None) -> torch.Tensor:
    """Text-to-image score matrix, ``num_texts x num_images``.

    Args:
        image_feats / text_feats: feature dicts as returned by ``encode_image`` / ``encode_text``.
        terms: None (every term present; both sides must have the same terms), a single
            term (``"global"``) or a sequence of terms.
    """
    if terms is None:
        image_terms, text_terms = feature_terms(image_feats), feature_terms(text_feats)
        if image_terms != text_terms:
            raise ValueError(f"image terms {image_terms} differ from text terms {text_terms}; pass terms=")
        terms = image_terms
    return flatten_features(text_feats, terms) @ flatten_features(image_feats, terms).T
