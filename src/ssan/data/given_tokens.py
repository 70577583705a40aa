"""A record's tokens: the dataset's ``processed_tokens`` as given (lower-cased) or re-tokenised.

The reference keeps given tokens such as ``t-shirt`` whole; it lower-cases them when counting
words but looks up the raw token, so a capitalised token (ICFG-PEDES's ``A``) is dropped as
unknown: a bug we do not copy. ``retokenize`` passes each given token through
:func:`ssan.data.vocab.tokenize` instead (``t-shirt`` -> ``t``, ``shirt``). What either rule
changed is counted in the ``changes`` dict.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from ssan.data.vocab import tokenize


def parse_tokens(
    value: Any, captions: List[str], retokenize: bool, changes: Dict[str, int]
) -> Tuple[Tuple[Tuple[str, ...], ...], int]:
    """Tokens per caption: ``processed_tokens`` when well-formed, else tokenized captions."""
    usable = (
        isinstance(value, list)
        and len(value) == len(captions)
        and all(isinstance(t, list) and t and all(isinstance(w, str) for w in t) for t in value)
    )
    if usable:
        return tuple(tuple(given_tokens(t, retokenize, changes)) for t in value), 0
    return tuple(tuple(tokenize(c)) for c in captions), int(value is not None)


def given_tokens(tokens: List[str], retokenize: bool, changes: Dict[str, int]) -> List[str]:
    """One caption's given tokens: lower-cased (default) or re-tokenised; changes are counted."""
    words: List[str] = []
    for token in tokens:
        lowered = token.strip().lower()
        changes["lowercased"] += lowered != token.strip()
        if retokenize:
            split = tokenize(token)
            changes["retokenized"] += split != [lowered]
            words.extend(split)
        elif lowered:
            words.append(lowered)
        else:
            changes["blank"] += 1
    return words
