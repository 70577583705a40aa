"""``ssan prepare``: validate a dataset and write its prepared directory."""

from __future__ import annotations

import argparse

HELP = "check a dataset (every record and image) and write the vocabulary and prepared splits"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ssan.data.formats import DATASET_FORMATS
    from ssan.data.prepare import DEFAULT_OUT

    parser.add_argument(
        "--dataset", required=True, choices=DATASET_FORMATS.names(), help="dataset layout (a registered format)"
    )
    parser.add_argument("--root", required=True, help="dataset folder (annotation file + imgs/)")
    parser.add_argument("--out", default=None, help=f"output folder (default: ROOT/{DEFAULT_OUT})")
    parser.add_argument("--min-count", type=int, default=2, help="keep words seen this often in train (default: 2)")
    parser.add_argument("--max-length", type=int, default=100, help="truncate captions to this many tokens")
    parser.add_argument(
        "--keep-unknown", action="store_true", help="map unknown words to <unk> (id 1) instead of dropping them"
    )
    parser.add_argument(
        "--retokenize",
        action="store_true",
        help="re-tokenise the dataset's processed_tokens (t-shirt -> t, shirt) instead of using "
        "them as given, lower-cased (the reference's rule)",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop bad records (listed in summary.json 'skipped') instead of failing",
    )
    parser.add_argument(
        "--overwrite",
        "--force",
        dest="overwrite",
        action="store_true",
        help="replace an output holding another dataset",
    )
    parser.add_argument("--workers", type=int, default=None, help="image-checking threads (default: 2 x cores, max 8)")


def run(args: argparse.Namespace) -> int:
    from ssan.data.prepare import DEFAULT_OUT, prepare_dataset

    summary = prepare_dataset(
        args.dataset,
        args.root,
        args.out,
        min_count=args.min_count,
        max_length=args.max_length,
        drop_unknown=not args.keep_unknown,
        skip_invalid=args.skip_invalid,
        overwrite=args.overwrite,
        workers=args.workers,
        retokenize=args.retokenize,
    )
    out = args.out or f"{args.root}/{DEFAULT_OUT}"
    print(
        f"prepared {summary['dataset']} in {out}: vocabulary {summary['vocab_size']} words, "
        f"{summary['num_classes']} training classes"
    )
    for split, counts in summary["splits"].items():
        print(
            f"  {split:5s} {counts['identities']:6d} ids {counts['images']:7d} images {counts['captions']:7d} captions"
        )
    if summary["dropped_train_ids"]:
        ids = summary["dropped_train_ids"]
        shown = ", ".join(str(i) for i in ids[:20]) + (f" ... ({len(ids)} in all)" if len(ids) > 20 else "")
        print(f"  dropped train ids with a single image: {shown}")
    if summary["skipped"]:
        print(f"  skipped {len(summary['skipped'])} record(s) (listed in summary.json)")
    if summary["empty_captions"]:
        print(f"  skipped {summary['empty_captions']} caption(s) with no known word")
    tokens = summary["tokens"]
    if tokens["lowercased"] or tokens["retokenized"]:
        print(
            f"  tokens changed from the dataset's: {tokens['lowercased']} by lower-casing, "
            f"{tokens['retokenized']} by --retokenize"
        )
    unknown = ", ".join(f"{split} {count}" for split, count in tokens["unknown_dropped"].items())
    print(f"  words dropped as unknown to the train vocabulary: {unknown}")
    return 0
