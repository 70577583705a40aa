"""Person detectors, one registry: torchvision's COCO detectors, and any that user code adds.

A detector is built by a factory registered under a name::

    from ssan.video import register_detector

    @register_detector("my-yolo")
    def my_yolo(weights, device, min_score):
        return MyPersonDetector(weights, device, min_score)   # images -> [(boxes, scores)]

and called on a list of frames (``H x W x 3`` uint8 RGB arrays); it returns, per frame, the
person boxes (``N x 4`` float32, ``x0, y0, x1, y1`` pixels) and their scores (``N`` float32),
scores >= ``min_score`` only. ``ssan index --detector`` choices and the "valid: ..." error
read :data:`DETECTORS`.

Weights of the torchvision detectors come from a local file (``--detector-weights``), else
torchvision's cache (``torch.hub``'s ``checkpoints/``), else torchvision fetches them itself on
first use (its weights API: checked against the hash in the file name, kept in that cache). They
are loaded strictly. A machine that cannot fetch them (offline) or a download that fails the hash
check is a one-line error that says what to download and where to put it; never random weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torchvision

from ssan.errors import SsanError
from ssan.registry import Registry
from ssan.video.errors import DetectorWeightsError

log = logging.getLogger(__name__)

COCO_PERSON = 1  # label of "person" in torchvision's COCO detectors
DEFAULT_MIN_SCORE = 0.5
DetectorFactory = Callable[[Optional[Path], str, float], Callable]
DETECTORS: Registry = Registry("detector", SsanError)


def register_detector(name: str, *, overwrite: bool = False):
    """Decorator registering ``factory(weights, device, min_score) -> detector`` under ``name``.

    ``weights`` is the local weights file the user gave (None: the factory's default source).
    A taken name is refused unless ``overwrite``.
    """
    return DETECTORS.register(name, overwrite=overwrite)


def build_detector(
    name: str, weights: Optional[Union[str, Path]] = None, device: str = "cpu", min_score: float = DEFAULT_MIN_SCORE
):
    """The registered detector ``name``; SsanError listing the valid names when unknown."""
    return DETECTORS.get(name)(Path(weights).expanduser() if weights is not None else None, device, float(min_score))


class TorchvisionPersonDetector:
    """A torchvision detection model restricted to COCO's "person" class.

    Args:
        model: a torchvision detector (eval mode is set here).
        device: where it runs; frames go there, boxes come back to the CPU.
        min_score: boxes scoring below this are dropped.
    """

    def __init__(self, model: torch.nn.Module, device: str = "cpu", min_score: float = DEFAULT_MIN_SCORE):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.min_score = min_score

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray]]:
        """images: H x W x 3 uint8 RGB each -> per image (N x 4 float32 xyxy boxes, N float32 scores)."""
        batch = [
            torch.from_numpy(np.ascontiguousarray(i)).to(self.device).permute(2, 0, 1).float() / 255 for i in images
        ]
        results = []
        for out in self.model(batch):
            keep = (out["labels"] == COCO_PERSON) & (out["scores"] >= self.min_score)
            results.append((out["boxes"][keep].float().cpu().numpy(), out["scores"][keep].float().cpu().numpy()))
        return results


def _cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _read_state(path: Path, name: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, unsafe pickle: all mean unusable weights
        raise DetectorWeightsError(f"cannot read weights of detector {name} from {path}: {_first_line(exc)}") from None
    return _unwrap(state, name, str(path))


def _unwrap(state, name: str, where: str) -> dict:
    """The plain state dict inside ``state`` (a checkpoint's ``state_dict``/``model``; ``module.`` prefixes off)."""
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DetectorWeightsError(f"weights {where} of detector {name} do not hold a state dict")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def _fetch(name: str, weights_enum, cached: Path) -> dict:
    """The weights fetched by torchvision itself (hash checked, kept in ``cached``); one line when it cannot."""
    url = weights_enum.url
    log.info("detector %s: fetching its weights from %s into %s", name, url, cached.parent)
    try:
        return weights_enum.get_state_dict(progress=True, check_hash=True)
    except OSError as exc:  # URLError, HTTPError, DNS, timeouts, a full disk: no weights here
        raise DetectorWeightsError(
            f"no weights for detector {name} on this machine and they could not be fetched ({_first_line(exc)}): "
            f"download {url} and either place it in torchvision's cache ({cached}) or pass "
            f"--detector-weights /path/{cached.name}; or give boxes you already have with --detections det.txt"
        ) from None
    except RuntimeError as exc:  # torchvision's hash check (it removes the download) or an unreadable file
        raise DetectorWeightsError(
            f"weights of detector {name} fetched from {url} were refused ({_first_line(exc)}); nothing was kept: "
            f"download it again into {cached}"
        ) from None


def detector_state(name: str, weights_enum, weights: Optional[Path]) -> Tuple[dict, str]:
    """(state dict, where it came from): ``weights`` if given, else torchvision's cache, else fetched into it."""
    url = weights_enum.url
    file_name = url.rsplit("/", 1)[-1]
    if weights is not None:
        if not weights.is_file():
            raise DetectorWeightsError(
                f"weights file of detector {name} not found: {weights}; download {url} "
                f"and pass --detector-weights /path/{file_name}"
            )
        return _read_state(weights, name), str(weights)
    cached = _cache_dir() / file_name
    if cached.is_file():
        return _read_state(cached, name), str(cached)
    return _unwrap(_fetch(name, weights_enum, cached), name, url), f"{url} (fetched into {cached})"


def _load_strict(model: torch.nn.Module, state: dict, name: str, where: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:

        def preview(keys):
            return (", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")) or "none"

        raise DetectorWeightsError(
            f"weights {where} do not fit detector {name}: missing {preview(missing)}, "
            f"unexpected {preview(unexpected)}, wrong shape {preview(wrong)}"
        )
    model.load_state_dict(state)


def _register_torchvision(name: str, weights_enum: str) -> None:
    def factory(weights: Optional[Path], device: str, min_score: float) -> TorchvisionPersonDetector:
        state, where = detector_state(name, getattr(torchvision.models.detection, weights_enum).DEFAULT, weights)
        model = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None)
        _load_strict(model, state, name, where)
        log.info("person detector %s with weights from %s", name, where)
        return TorchvisionPersonDetector(model, device, min_score)

    factory.__doc__ = f"torchvision's COCO {name}, person class only."
    register_detector(name)(factory)


for _name, _enum in (
    ("ssdlite320_mobilenet_v3_large", "SSDLite320_MobileNet_V3_Large_Weights"),
    ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights"),
    ("fcos_resnet50_fpn", "FCOS_ResNet50_FPN_Weights"),
    ("retinanet_resnet50_fpn_v2", "RetinaNet_ResNet50_FPN_V2_Weights"),
):
    _register_torchvision(_name, _enum)
