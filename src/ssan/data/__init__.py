"""Data: the three dataset formats, tokenizer and vocabulary, ``prepare``, the synthetic
generator, safe image loading, transforms, torch datasets and the collate function."""

from ssan.data.annotations import Annotations, Problem, Record, find_annotation, read_annotations
from ssan.data.datasets import GalleryDataset, QueryDataset, TrainDataset, collate_batch, make_loader, pad_tokens
from ssan.data.formats import DATASET_FORMATS, DatasetFormat, dataset_format, register_dataset_format
from ssan.data.images import MAX_PIXELS, ImageError, check_image, load_rgb
from ssan.data.prepare import DEFAULT_OUT, check_images, prepare_dataset
from ssan.data.prepared import PreparedDataset, load_prepared
from ssan.data.synth import generate_synthetic
from ssan.data.transforms import build_transforms
from ssan.data.vocab import PAD, UNK, Vocabulary, tokenize

__all__ = [
    "DATASET_FORMATS",
    "DEFAULT_OUT",
    "MAX_PIXELS",
    "PAD",
    "UNK",
    "Annotations",
    "DatasetFormat",
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
    "dataset_format",
    "find_annotation",
    "generate_synthetic",
    "load_prepared",
    "load_rgb",
    "make_loader",
    "pad_tokens",
    "prepare_dataset",
    "read_annotations",
    "register_dataset_format",
    "tokenize",
]
