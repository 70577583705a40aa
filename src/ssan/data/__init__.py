"""Data: the three dataset formats, tokenizer and vocabulary, ``prepare``, the synthetic
generator, safe image loading, transforms, torch datasets and the collate function."""

from ssan.data.datasets import (
    GalleryDataset,
    QueryDataset,
    TrainDataset,
    collate_batch,
    make_loader,
    pad_tokens,
)
from ssan.data.formats import DATASETS, Annotations, Problem, Record, find_annotation, read_annotations
from ssan.data.images import MAX_PIXELS, ImageError, check_image, load_rgb
from ssan.data.prepare import DEFAULT_OUT, check_images, prepare_dataset
from ssan.data.prepared import PreparedDataset, load_prepared
from ssan.data.synth import FORMATS as SYNTH_FORMATS
from ssan.data.synth import generate_synthetic
from ssan.data.transforms import build_transforms
from ssan.data.vocab import PAD, UNK, Vocabulary, tokenize

__all__ = [
    "DATASETS",
    "DEFAULT_OUT",
    "MAX_PIXELS",
    "PAD",
    "SYNTH_FORMATS",
    "UNK",
    "Annotations",
    "GalleryDataset",
    "ImageError",
    "PreparedDataset",
    "Problem",
    "QueryDataset",
    "Record",
    "TrainDataset",
    "Vocabulary",
    "build_transforms",
    "check_image",
    "check_images",
    "collate_batch",
    "find_annotation",
    "generate_synthetic",
    "load_prepared",
    "load_rgb",
    "make_loader",
    "pad_tokens",
    "prepare_dataset",
    "read_annotations",
    "tokenize",
]
