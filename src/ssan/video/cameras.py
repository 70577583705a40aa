"""The cameras of a deployment (``cameras.yaml``): where each stream is and how long its tracks are kept.

::

    cameras:
      - name: gate
        url: rtsp://127.0.0.1:8554/gate   # rtsp://, http(s)://, udp://, tcp:// (MPEG-TS), or a file
        retain: 30d                        # optional: forget its tracks after this long (s, m, h, d, w)
      - name: yard
        url: /recordings/yard.mp4

Names are unique; anything else in the file is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Dict, List, Optional

from ssan.errors import SsanError

_KEYS = {"name", "url", "retain"}


@dataclass(frozen=True)
class Camera:
    name: str
    url: str
    retain: Optional[timedelta] = None


def _camera(item, where: str) -> Camera:
    from ssan.search.retention import parse_duration

    if not isinstance(item, dict) or not {"name", "url"} <= set(item) or set(item) - _KEYS:
        raise SsanError(f"{where}: a camera is {{name, url, retain (optional)}}, got {item!r}")
    if not isinstance(item["name"], str) or not item["name"].strip() or not isinstance(item["url"], str):
        raise SsanError(f"{where}: name and url must be text, got {item!r}")
    retain = parse_duration(item["retain"], f"{where}: retain") if item.get("retain") is not None else None
    return Camera(item["name"].strip(), item["url"], retain)


def read_cameras(path) -> List[Camera]:
    """The cameras listed in ``path`` (SsanError naming the file and the entry when malformed)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SsanError(f"cannot read cameras file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list) or not data["cameras"]:
        raise SsanError(f"{path}: expected `cameras:` with a list of cameras")
    cameras = [_camera(item, f"{path}: camera {number}") for number, item in enumerate(data["cameras"], start=1)]
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise SsanError(f"{path}: camera names must be unique, got {', '.join(names)}")
    return cameras


def retention_of(cameras: List[Camera], default: Optional[timedelta]) -> Dict[Optional[str], timedelta]:
    """``{camera: retain}`` (``None``: every other camera, from ``--retain``) for :mod:`ssan.search.retention`."""
    retain: Dict[Optional[str], timedelta] = {c.name: c.retain for c in cameras if c.retain is not None}
    if default is not None:
        retain[None] = default
    return retain
