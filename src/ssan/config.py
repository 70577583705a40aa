"""Typed run configuration: dataclasses, YAML presets and ``--set`` overrides.

A preset is a YAML file with up to five sections (``data``, ``model``, ``loss``,
``optim``, ``train``) whose keys are the fields below; anything left out keeps
its default. Presets ship inside the package (``ssan/configs/*.yaml``, also
reachable as ``configs/`` at the repository root) and are named without the
extension (``synth``, ``cuhk-pedes``...); a path to any YAML file works too.

Library code never receives a :class:`Config`: each component has a small
function that maps its section to explicit constructor arguments.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from ssan._config_checks import check_numbers
from ssan.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    height: int = 384  # input image height (pixels)
    width: int = 128  # input image width (pixels)
    max_length: int = 100  # captions are truncated to this many tokens (training, evaluation and search)
    batch_size: int = 64  # the global training batch: under DDP each of W processes takes batch_size / W
    eval_batch_size: int = 128  # batch size used to encode galleries and queries
    num_workers: int = 2  # DataLoader worker processes (kept alive across epochs)
    flip: bool = True  # random horizontal flip during training
    cache_images: bool = False  # keep decoded training images in memory (small sets; per worker process)
    pad_crop: int = 0  # pad this many black pixels, random-crop back to height x width (IRRA: 10; 0 = off)
    erase_prob: float = 0.0  # random erasing probability (IRRA: 0.5; 0 = off)
    erase_scale: tuple = (0.02, 0.4)  # random erasing: the erased area's range, as a fraction of the image
    erase_fill: tuple = (0.5, 0.5, 0.5)  # random erasing: RGB fill in 0..1 (the *-clip presets: CLIP's mean)


@dataclass
class ModelConfig:
    """The SSAN architecture (``ssan.models.SSAN`` takes it whole); the defaults are the paper's."""

    backbone: str = "resnet50"  # a registered backbone: resnet50 | resnet18 | small (a CPU CNN) | clip-vit
    pretrained: Union[bool, str] = False  # true: torchvision ImageNet weights; a path: local weights file (CLIP's)
    text_encoder: str = "lstm"  # a registered text encoder: lstm (the paper's Bi-LSTM) | clip (CLIP's transformer)
    clip_model: str = "ViT-B-16"  # clip-vit / clip: the open_clip architecture of both trunks
    num_parts: int = 6  # K, horizontal stripes / text parts
    embed_dim: int = 1024  # D, width of global and part features
    word_dim: int = 512  # width of the word embedding tables
    hidden_dim: int = 2048  # LSTM hidden width (= backbone channels in the paper)
    dropout: float = 0.3  # dropout on the word embeddings
    parts: bool = True  # false: global-only ablation
    cnn_width: int = 32  # base channel width of the `small` backbone
    relation_norm: str = "per_part"  # relation-module BatchNorm: per_part (the reference) | shared (trains at batch 1)


def _default_terms() -> dict:
    return {"id": 1.0, "cr": 1.0}


@dataclass
class LossConfig:
    """The objective (``ssan.losses.SSANCriterion`` takes it whole)."""

    terms: dict = field(default_factory=_default_terms)  # registered loss term -> weight: id, cr (the method), nce
    margin: float = 0.2  # cr: alpha, compound ranking margin
    beta: float = 0.1  # cr: weight of the weak-positive term
    weak_warmup_epochs: int = 5  # cr: epochs using the fixed weak margin alpha/2
    weak_skip: float = 0.16  # cr: anchors whose adaptive weak margin is below this are skipped
    temperature: float = 0.05  # nce: InfoNCE temperature
    part_weight: float = 0.5  # weight of the part and relation features in every term
    options: dict = field(default_factory=dict)  # term name -> its constructor options (terms added from user code)


@dataclass
class OptimConfig:
    epochs: int = 60
    lr: float = 1e-3  # new layers
    backbone_lr: float = 1e-4  # image backbone (pretrained part)
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8  # Adam's epsilon (IRRA's CLIP recipe: 1e-3)
    weight_decay: float = 0.0
    trunk_modules: tuple = ("backbone",)  # model modules trained at backbone_lr (the CLIP presets: both trunks)
    bias_lr_factor: float = 1.0  # biases train at this x their group's rate (IRRA: 2)
    bias_weight_decay: Optional[float] = None  # weight decay of biases (None: weight_decay; IRRA: 0)
    schedule: str = "multistep"  # multistep (milestones, gamma) | cosine (to 0 at the last epoch, after warm-up)
    milestones: tuple = (20, 40)  # multistep: MultiStepLR epochs
    gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up epochs before the schedule (IRRA: 5)
    warmup_factor: float = 0.1  # the warm-up's starting fraction of each rate


SELECT_METRICS = ("R1", "R5", "R10", "mAP", "mINP")
SELECT_TERMS = ("sum", "global", "parts", "relation")
AMP_DTYPES = ("auto", "bf16", "fp16")
SCHEDULES = ("multistep", "cosine")
GRAD_COMPRESSIONS = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    seed: int = 0
    amp: bool = False  # mixed precision (autocast) on the training device
    amp_dtype: str = "auto"  # auto (bf16 where the device supports it, else fp16) | bf16 | fp16 (with a GradScaler)
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    select_split: str = "auto"  # split used to pick the best checkpoint: auto (val if present, else test) | val | test
    select_metric: str = "R1"  # R1 | R5 | R10 | mAP | mINP
    select_term: str = "sum"  # sum | global | parts | relation
    test_every_epoch: bool = False  # also evaluate the test split at every evaluation (the reference's protocol)
    max_steps_per_epoch: int = 0  # 0 = full epochs; >0 caps each epoch (benchmarks, smoke runs)
    log_every: int = 10  # steps between reads of the loss values (progress bar); 1 read per log_every steps
    cpu_threads: int = 0  # torch threads when training on the CPU (0 = torch's default)
    checkpoint_every: int = 0  # also save `last` every N steps inside an epoch (0 = at epoch ends only)
    sync_bn: bool = False  # under DDP: BatchNorm statistics over the global batch (backbone and relation)
    deterministic: bool = False  # deterministic algorithms on CUDA (exact resume there too; slower)
    channels_last: bool = False  # channels-last memory format for the image branch (CUDA convolutions)
    cudnn_benchmark: bool = True  # let cuDNN pick its fastest convolution algorithms (off when deterministic)
    tf32: bool = False  # TF32 matmuls, convolutions and LSTM on Ampere and newer GPUs (faster, 10-bit mantissa)
    grad_compression: str = "none"  # under DDP: none | bf16 | fp16 gradients on the wire (half the all-reduce bytes)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain, YAML/JSON-serialisable nested dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        config = cls()
        for section, values in _migrate(data or {}).items():
            if not isinstance(values, dict):
                raise ConfigError(f"section {section!r} must be a mapping, got {type(values).__name__}")
            for key, value in values.items():
                _assign(config, section, key, value)
        return config.validate()

    def validate(self) -> Config:
        """Check the settings that are one of a few names and the ranges of the numeric ones; returns ``self``."""
        train = self.train
        _one_of("train.select_metric", train.select_metric, SELECT_METRICS)
        _one_of("train.select_term", train.select_term, SELECT_TERMS)
        _one_of("train.select_split", train.select_split, ("auto", "val", "test"))
        _one_of("train.amp_dtype", train.amp_dtype, AMP_DTYPES)
        _one_of("train.grad_compression", train.grad_compression, GRAD_COMPRESSIONS)
        _one_of("model.relation_norm", self.model.relation_norm, ("per_part", "shared"))
        for name, weight in self.loss.terms.items():
            if not isinstance(name, str) or isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ConfigError(f"loss.terms must map term names to numbers, got {name!r}: {weight!r}")
        if not all(isinstance(v, dict) for v in self.loss.options.values()):
            raise ConfigError("loss.options must map term names to mappings of options")
        _validate_recipe(self)
        check_numbers(self)  # every numeric setting within its range (ssan._config_checks)
        return self


def _validate_recipe(config: Config) -> None:
    """The augmentation and optimiser settings of the CLIP-era recipe."""
    data, optim = config.data, config.optim
    _one_of("optim.schedule", optim.schedule, SCHEDULES)
    checks = [
        (data.pad_crop >= 0, f"data.pad_crop must be 0 or more pixels, got {data.pad_crop}"),
        (0.0 <= data.erase_prob <= 1.0, f"data.erase_prob must lie in 0..1, got {data.erase_prob}"),
        (
            len(data.erase_scale) == 2 and 0 < data.erase_scale[0] <= data.erase_scale[1] < 1,
            f"data.erase_scale must be [low, high] with 0 < low <= high < 1, got {list(data.erase_scale)}",
        ),
        (
            len(data.erase_fill) == 3 and all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in data.erase_fill),
            f"data.erase_fill must be an RGB colour of three numbers in 0..1, got {list(data.erase_fill)}",
        ),
        (optim.eps > 0, f"optim.eps must be positive, got {optim.eps}"),
        (optim.bias_lr_factor > 0, f"optim.bias_lr_factor must be positive, got {optim.bias_lr_factor}"),
        (
            optim.bias_weight_decay is None or optim.bias_weight_decay >= 0,
            f"optim.bias_weight_decay must be 0 or more (or null), got {optim.bias_weight_decay}",
        ),
        (
            optim.warmup_epochs >= 0,  # more than optim.epochs: the run ends inside the warm-up
            f"optim.warmup_epochs must be 0 or more, got {optim.warmup_epochs}",
        ),
        (0 < optim.warmup_factor <= 1, f"optim.warmup_factor must lie in (0, 1], got {optim.warmup_factor}"),
        (
            all(isinstance(m, str) and m for m in optim.trunk_modules),
            f"optim.trunk_modules must name model modules, got {list(optim.trunk_modules)}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _migrate(data: dict) -> dict:
    """Configs written by ssan 0.1 (checkpoints, run folders): its loss weights become ``loss.terms``."""
    loss = data.get("loss")
    if not isinstance(loss, dict) or not ({"id_weight", "contrastive_weight"} & set(loss)):
        return data
    loss = dict(loss)
    terms = dict(loss.get("terms") or _default_terms())
    terms["id"] = loss.pop("id_weight", terms.get("id", 1.0))
    nce = loss.pop("contrastive_weight", 0.0)
    if nce:
        terms["nce"] = nce
    return {**data, "loss": {**loss, "terms": terms}}


def _one_of(where: str, value, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{where}: unknown value {value!r}; valid: {', '.join(valid)}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _section(config: Config, section: str):
    names = [f.name for f in dataclasses.fields(config)]
    if section not in names:
        raise ConfigError(f"unknown config section {section!r}; valid: {', '.join(names)}")
    return getattr(config, section)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    hint = annotation if not isinstance(annotation, str) else eval(annotation, vars(typing))  # noqa: S307
    origin = typing.get_origin(hint)
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(value)
    if origin is Union and type(None) in typing.get_args(hint):  # Optional[float]
        return None if value is None else _coerce(value, typing.get_args(hint)[0], where)
    if origin is Union:
        for option in typing.get_args(hint):
            if option is bool and isinstance(value, bool):
                return value
            if option is str and isinstance(value, str):
                return value
        raise ConfigError(f"{where}: expected one of {hint}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _assign(config: Config, section: str, key: str, value: Any) -> None:
    target = _section(config, section)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise ConfigError(f"unknown config key {section}.{key}; valid: {', '.join(fields)}")
    setattr(target, key, _coerce(value, fields[key].type, f"{section}.{key}"))


def resolve_preset(preset: Union[str, Path]) -> Path:
    """Path of a preset given by name (``synth``) or by file path."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = PRESET_DIR / f"{preset}.yaml"
    if candidate.exists():
        return candidate
    raise ConfigError(
        f"unknown preset {str(preset)!r}; valid names: {', '.join(list_presets())} (or a path to a YAML file)"
    )


def list_presets() -> list:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """Apply ``section.key=value`` strings; values are parsed as YAML (``1e-3``, ``[10, 20]``, ``false``).

    A mapping setting takes a whole mapping (``loss.terms={id: 1, cr: 1, nce: 1}``) or one entry
    (``loss.terms.nce=1.0``).
    """
    for item in overrides or ():
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({exc.__class__.__name__})") from None
        key, _, entry = key.partition(".")
        if entry:
            current = getattr(_section(config, section), key, None) if key else None
            if not isinstance(current, dict):
                raise ConfigError(f"override {item!r}: {section}.{key} is not a mapping setting")
            value = {**current, entry: value}
        _assign(config, section, key, value)
    return config.validate()


def load_config(preset: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """Load a preset (name or YAML path; None gives the defaults) and apply overrides."""
    if preset is None:
        config = Config()
    else:
        path = resolve_preset(preset)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read preset {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"preset {path} must be a mapping of sections")
        config = Config.from_dict(data)
    return apply_overrides(config, overrides)


def save_config(config: Config, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
