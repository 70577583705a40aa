"""Access tokens of the search service: where they come from and how a candidate is checked.

A token is 16 to 256 characters of ``A-Z a-z 0-9 . _ ~ -`` (they go into URLs unquoted).
A token file holds one token per line, either bare (``TOKEN``) or named (``NAME:TOKEN``) so
that the audit log can tell operators apart; blank lines and ``#`` comments are ignored.

Candidates are compared in constant time: the SHA-256 of the candidate is compared with
``hmac.compare_digest`` against the SHA-256 of every accepted token (all of them, no early
exit), so neither the token's length nor a matching prefix shows in the response time. The
browser's session cookie is not the token itself but an HMAC of it under a key made when the
service starts: a cookie stops working when the service restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ssan.errors import SsanError

log = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
FINGERPRINT_CHARS = 12
IDENTITY_KEY = "ssan.identity"  # where the authentication middleware leaves the Identity in the ASGI scope


class TokenError(SsanError):
    """A token file, token value or token name that cannot be used."""


@dataclass(frozen=True)
class Identity:
    """Who a request was authenticated as.

    Attributes:
        name: the operator's name from a ``NAME:TOKEN`` line, None for an unnamed token.
        fingerprint: the first 12 hex digits of the token's SHA-256 (``printf %s TOKEN | sha256sum``).
    """

    name: Optional[str]
    fingerprint: str


def generate_token() -> str:
    """A new random token (32 URL-safe characters, 192 bits, from :mod:`secrets`)."""
    return secrets.token_urlsafe(24)


def fingerprint(token: str) -> str:
    """A short public fingerprint of ``token`` (never enough to recover or guess it)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]


def check_token(token: str, where: str) -> str:
    """``token`` if it is usable; TokenError naming ``where`` it came from otherwise."""
    if not TOKEN_PATTERN.fullmatch(token):
        raise TokenError(
            f"{where}: a token must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ - "
            f"(got {len(token)} characters); make one with `ssan serve --token-file FILE --new-token NAME`"
        )
    return token


def _sha256(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _match(candidate: bytes, digests: Dict[bytes, Identity]) -> Optional[Identity]:
    """The identity whose digest equals the candidate's, comparing with every one in constant time."""
    wanted = _sha256(candidate)
    found = None
    for digest, identity in digests.items():
        if hmac.compare_digest(wanted, digest):
            found = identity
    return found


class TokenStore:
    """The accepted tokens.

    Args:
        tokens: ``(name, token)`` pairs; name None for an unnamed token. Names and tokens are unique.
        source: where the tokens came from, for messages (``"--token-file tokens.txt"``, ``"SSAN_TOKEN"``...).
    """

    def __init__(self, tokens: List[Tuple[Optional[str], str]], source: str):
        if not tokens:
            raise TokenError(f"{source}: no tokens")
        self.source = source
        self._session_key = secrets.token_bytes(32)
        self._tokens: Dict[bytes, Identity] = {}
        self._sessions: Dict[bytes, Identity] = {}
        self._cookies: Dict[Identity, str] = {}
        for name, token in tokens:
            identity = Identity(name, fingerprint(check_token(token, source)))
            if _sha256(token.encode()) in self._tokens:
                raise TokenError(f"{source}: the same token appears twice")
            cookie = hmac.new(self._session_key, token.encode(), hashlib.sha256).hexdigest()
            self._tokens[_sha256(token.encode())] = identity
            self._sessions[_sha256(cookie.encode())] = identity
            self._cookies[identity] = cookie

    @classmethod
    def from_file(cls, path) -> TokenStore:
        """The tokens of a token file (see the module docstring); warns when others can read it."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"cannot read the token file {path}: {exc}") from None
        store = cls(parse_token_file(text, path), f"token file {path}")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s can be read by other users (mode %o): chmod 600 %s", path, mode & 0o777, path)
        return store

    @property
    def names(self) -> List[Optional[str]]:
        """The names of the accepted tokens, in file order (None for unnamed ones)."""
        return [identity.name for identity in self._tokens.values()]

    def match_token(self, candidate: bytes) -> Optional[Identity]:
        """The identity of a presented token (``Authorization: Bearer``, ``?token=``), or None."""
        return _match(candidate, self._tokens)

    def match_cookie(self, candidate: bytes) -> Optional[Identity]:
        """The identity of a presented session cookie value, or None."""
        return _match(candidate, self._sessions)

    def cookie_for(self, identity: Identity) -> str:
        """The session cookie value that stands for ``identity``'s token until the service stops."""
        return self._cookies[identity]


def parse_token_file(text: str, path) -> List[Tuple[Optional[str], str]]:
    """``(name, token)`` pairs of a token file's text; TokenError naming the line otherwise."""
    pairs, names = [], set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, token = line.rpartition(":")
        where = f"{path}, line {number}"
        if colon and not NAME_PATTERN.fullmatch(name):
            raise TokenError(f"{where}: a name must be 1 to 64 characters of A-Z a-z 0-9 . _ @ -")
        if colon and name in names:
            raise TokenError(f"{where}: the name {name!r} appears twice")
        names.add(name)
        pairs.append((name or None, check_token(token, where)))
    if not pairs:
        raise TokenError(f"the token file {path} holds no tokens (one `NAME:TOKEN` per line)")
    return pairs


def append_new_token(path, name: str) -> str:
    """Add a ``name:token`` line with a new token to the token file (created with mode 0600); returns it."""
    path = Path(path)
    if not NAME_PATTERN.fullmatch(name):
        raise TokenError(f"--new-token {name!r}: a name must be 1 to 64 characters of A-Z a-z 0-9 . _ @ -")
    existing = ""
    if path.exists():
        existing = path.read_text(encoding="utf-8")
        if name in {n for n, _ in parse_token_file(existing, path) if n is not None}:
            raise TokenError(f"{path} already has a token named {name!r}")
    token = generate_token()
    line = ("\n" if existing and not existing.endswith("\n") else "") + f"{name}:{token}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise TokenError(f"cannot write the token file {path}: {exc}") from None
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line)
    return token
