"""``ssan search``: rank an indexed gallery against a free-text description."""

from __future__ import annotations

import argparse
import json
import logging

from ssan.commands._searcher_options import add_searcher_arguments

log = logging.getLogger(__name__)

HELP = "search an index with a text description (top-k images or tracks, scores, word attention per body part)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index", "--store", required=True, help="index folder written by `ssan index`, or a postgresql:// store URL"
    )
    parser.add_argument("query", help="description of the person, in quotes")
    parser.add_argument("-k", "--top-k", dest="k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--json", action="store_true", help="print the full answer as JSON")
    parser.add_argument("--sheet", help="write a picture of the results (PNG) here")
    parser.add_argument("--attention", help="write the per-part word attention heat map (PNG) here")
    narrow = parser.add_argument_group("footage filters (an index of tracks)")
    narrow.add_argument(
        "--camera", action="append", default=[], metavar="NAME", help="only tracks of this camera (repeatable)"
    )
    narrow.add_argument("--after", metavar="TIME", help="only tracks seen at or after TIME (ISO 8601 with zone)")
    narrow.add_argument("--before", metavar="TIME", help="only tracks seen at or before TIME (ISO 8601 with zone)")
    add_searcher_arguments(parser)


def format_answer(answer: dict, words_per_part: int = 4) -> str:
    """The answer as terminal text: results table, unknown words, top words per body part."""
    from ssan.search import top_words

    lines = [f"query: {answer['query'] if len(answer['query']) <= 200 else answer['query'][:200] + '...'}"]
    if answer["unknown_words"]:
        lines.append(f"unknown words (ignored): {', '.join(dict.fromkeys(answer['unknown_words']))}")
    if answer["truncated"]:
        lines.append(f"the query was cut to its first {len(answer['tokens'])} words")
    if answer["results"] and "track" in answer["results"][0]:
        lines.extend(track_lines(answer["results"]))
    else:
        lines.append(f"{'rank':>4}  {'score':>7}  {'id':>6}  path")
        for r in answer["results"]:
            identity = "-" if r["id"] is None else str(r["id"])
            lines.append(f"{r['rank']:>4}  {r['score']:7.4f}  {identity:>6}  {r['path']}")
    if answer["attention"]:
        lines.append("word attention per body part (stripes top to bottom), most attended words:")
        for part, pairs in top_words(answer["attention"], words_per_part).items():
            listing = ", ".join(f"{word} {weight:.2f}" for word, weight in pairs)
            lines.append(f"  {part.replace('_', ' ')}: {listing}")
    return "\n".join(lines)


def clock(seconds: float) -> str:
    """Seconds as ``H:MM:SS.s``."""
    tenths = int(round(float(seconds) * 10))
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    return f"{hours}:{minutes:02d}:{rest // 10:02d}.{rest % 10}"


def track_lines(results: list) -> list:
    """One line per track result: rank, score, camera, start-end time, track id, source file."""
    from pathlib import Path

    width = max([6] + [len(r["camera"]) for r in results])
    wall = any(r["time_base"] == "utc" for r in results)
    span_width = 46 if wall else 21
    note = [] if wall else ["times: seconds from the start of each file (no wall-clock start known for these tracks)"]
    lines = note + [f"{'rank':>4}  {'score':>7}  {'camera':<{width}}  {'time':<{span_width}}  {'track':>6}  source"]
    for r in results:
        span = f"{clock(r['offset_start'])}-{clock(r['offset_end'])}"
        if wall:
            span = f"{r['start']}-{r['end'][11:]}" if r["time_base"] == "utc" else f"{span} (offsets)"
        lines.append(
            f"{r['rank']:>4}  {r['score']:7.4f}  {r['camera']:<{width}}  {span:<{span_width}}  {r['track']:>6}  "
            f"{Path(r['video']).name}"
        )
    return lines


def _track_sheet(answer: dict, out: str) -> None:
    from ssan.errors import SsanError
    from ssan.video import track_frame
    from ssan.viz import track_sheet

    hits = []
    for r in answer["results"]:
        try:
            frame, box = track_frame(r)
        except SsanError as exc:
            log.warning("sheet: no frame for track %s (%s)", r["track"], exc)
            frame, box = None, None
        title = (
            f"{r['rank']}. {r['camera']}  {clock(r['offset_start'])}-{clock(r['offset_end'])}  track {r['track']}  "
            f"score {r['score']:.3f}  (frame {r['frames'][0]})"
        )
        hits.append({"crop": r["path"], "frame": frame, "box": box, "title": title})
    track_sheet(answer["query"], hits, out)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ssan.search import Searcher
    from ssan.search.filters import TrackFilter

    filters = TrackFilter.parse(args.camera, args.after, args.before)  # a bad time fails before the model loads
    searcher = Searcher(
        args.index,
        backend=args.backend,
        device=args.device,
        checkpoint=args.checkpoint,
        onnx_dir=args.onnx,
        threads=args.threads,
    )
    answer = searcher.search(args.query, k=args.k, filters=filters or None)
    print(json.dumps(answer, indent=1, ensure_ascii=False) if args.json else format_answer(answer))
    if args.sheet and answer["results"] and "track" in answer["results"][0]:
        _track_sheet(answer, args.sheet)
        if not args.json:
            print(f"results sheet: {args.sheet}")
    elif args.sheet:
        from ssan.viz import retrieval_sheet

        results = [(r["path"], None, r["score"]) for r in answer["results"]]
        retrieval_sheet([{"caption": args.query, "results": results}], args.sheet, top_k=args.k)
        if not args.json:
            print(f"results sheet: {args.sheet}")
    if args.attention and answer["attention"]:
        from ssan.viz import attention_picture

        weights = np.array([[w for _, w in pairs] for pairs in answer["attention"].values()])
        attention_picture(answer["tokens"], weights, args.attention, title=args.query)
        if not args.json:
            print(f"attention picture: {args.attention}")
    return 0
