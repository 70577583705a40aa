"""An open_clip model behind the interface of ssan's models (``encode_image`` / ``encode_text``).

:class:`ClipRetrieval` takes ssan's inputs and returns ssan's feature dicts, so galleries,
footage, evaluation and export run a CLIP checkpoint as they run an SSAN one:

- images: B x 3 x H x W normalised with ssan's statistics (mean 0.5, std 0.5, see
  :mod:`ssan.data.transforms`); they are mapped back to pixels and normalised with the CLIP
  weights' own mean and std, then ``open_clip``'s ``encode_image``.
- text: B x L BPE piece ids without start/end tokens (0-padded) and their lengths; the start
  and end tokens are put around each caption and the batch padded to the context length, as
  open_clip's tokenizer does, then ``open_clip``'s ``encode_text``.

Both return ``{"global": B x D}`` L2-normalised: the similarity of a text and an image is their
cosine, the scores search reports.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssan.data.transforms import MEAN as SSAN_MEAN
from ssan.data.transforms import STD as SSAN_STD


class ClipRetrieval(nn.Module):
    """open_clip's two encoders with ssan's inputs and outputs.

    Args:
        clip: an open_clip ``CLIP`` / ``CustomTextCLIP`` model.
        arch: the checkpoint's ``arch`` (see :func:`ssan.clip.checkpoint.clip_arch`).
        sot_id, eot_id: the tokenizer's start and end token ids.
    """

    parts = False  # one global feature, no body parts (the interface of SSAN's global-only ablation)

    def __init__(self, clip: nn.Module, arch: dict, sot_id: int, eot_id: int):
        super().__init__()
        self.clip = clip.eval()
        self.arch = {**arch, "vocab_size": int(clip.vocab_size) - 2}  # piece ids a caption may hold: 0 .. size-1
        self.context_length = int(arch["context_length"])
        self.sot_id, self.eot_id = int(sot_id), int(eot_id)
        scale = torch.tensor([SSAN_STD[0] / s for s in arch["std"]]).view(1, 3, 1, 1)
        shift = torch.tensor([(SSAN_MEAN[0] - m) / s for m, s in zip(arch["mean"], arch["std"])]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def clip_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """ssan-normalised images -> CLIP-normalised ones: ((x * 0.5 + 0.5) - mean) / std per channel."""
        return images * self.scale + self.shift

    def encode_image(self, images: torch.Tensor) -> dict:
        """images: B x 3 x H x W (ssan-normalised) -> {"global": B x D} (unit length)."""
        return {"global": self.clip.encode_image(self.clip_pixels(images), normalize=True)}

    def context(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """B x L piece ids + lengths -> B x context ids: start, the first pieces, end, zeros.

        Traceable for ONNX: the lengths may be a tensor of the graph.
        """
        batch, width = tokens.shape[0], self.context_length
        lengths = lengths.to(tokens.device).clamp(max=width - 2).unsqueeze(1)  # B x 1
        body = tokens[:, : width - 2]
        body = F.pad(body, (1, width - 1 - body.shape[1]))  # B x width, body at 1..L
        positions = torch.arange(width, device=tokens.device).unsqueeze(0).expand(batch, width)
        body = torch.where(positions <= lengths, body, torch.zeros_like(body))
        body = torch.where(positions == lengths + 1, torch.full_like(body, self.eot_id), body)
        return torch.where(positions == 0, torch.full_like(body, self.sot_id), body)

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False) -> dict:
        """tokens: B x L piece ids (0-padded), lengths: B -> {"global": B x D} (unit length).

        ``return_attention`` is accepted for the interface; CLIP has no part attention to return.
        """
        return {"global": self.clip.encode_text(self.context(tokens, lengths), normalize=True)}

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> dict:
        return {"image": self.encode_image(images), "text": self.encode_text(tokens, lengths)}


def letterbox_size(width: int, height: int, out_width: int, out_height: int) -> tuple:
    """(width, height) of an image scaled to fit ``out_width x out_height`` with its aspect kept."""
    scale = min(out_width / width, out_height / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class Letterbox:
    """PIL image -> the image scaled (bicubic, aspect kept) and centred on a ``size`` canvas of ``fill``.

    Args:
        height, width: the canvas (CLIP's input, e.g. 224 x 224).
        fill: RGB 0-255 of the bars: the normalisation mean, so the bars are zeros after normalising.
    """

    def __init__(self, height: int, width: int, fill: Sequence[float]):
        self.height, self.width = int(height), int(width)
        self.fill = tuple(int(round(v * 255)) for v in fill)

    def __call__(self, image):
        from PIL import Image

        size = letterbox_size(image.width, image.height, self.width, self.height)
        if size != (image.width, image.height):
            image = image.resize(size, Image.BICUBIC)
        if size == (self.width, self.height):
            return image
        canvas = Image.new("RGB", (self.width, self.height), self.fill)
        canvas.paste(image, ((self.width - size[0]) // 2, (self.height - size[1]) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"Letterbox({self.height}x{self.width}, fill={self.fill})"


PREPROCESS = ("letterbox", "stretch")


def clip_transform(arch: dict, uint8: bool = False, train: bool = False):
    """The gallery transform of a CLIP checkpoint: letterbox (default) or stretch to its input, then
    ssan's tensor conversion (``uint8`` pixels, or values normalised with mean 0.5, std 0.5)."""
    from torchvision import transforms as T

    from ssan.data.transforms import build_transforms

    height, width = arch["image_size"]
    tail = build_transforms(height, width, train=train, uint8=uint8)  # resize is a no-op after the letterbox
    if arch.get("preprocess", "letterbox") == "stretch":
        return tail
    return T.Compose([Letterbox(height, width, arch["mean"]), *tail.transforms])


def image_size_of(config: dict) -> tuple:
    """(height, width) of an open_clip configuration's image input."""
    size = config["vision_cfg"]["image_size"]
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
