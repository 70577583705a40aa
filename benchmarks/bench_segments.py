"""Segments joined against one process, with ByteTrack or the MOT ids (no Ray: the worker runs in-process).

Makes a synthetic street video (144x256, 10 fps, ``--people`` walkers, ``--seconds`` long), indexes its
ground-truth boxes sampled at 5 fps in one process, then cuts it into segments of ``--segment-seconds``
overlapping by ``--segment-overlap``, runs :class:`ssan.video.ray_ingest.SegmentWorker` on each in this
process and joins them as ``--ray`` does; prints how many tracks and boxes each gives and how many tracks
have the same ids, times, frames and boxes.

    python benchmarks/bench_segments.py --people 20 --seconds 20 --segment-seconds 3 --segment-overlap 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench_ray import street_and_model
from ssan.video import IngestOptions, build_track_index, find_sources
from ssan.video.ray_ingest import RayJob, RayTracks, SegmentWorker

FIELDS = ("track", "start", "end", "first_frame", "last_frame", "frames", "times", "boxes")


def compare(work: Path, video: Path, mot: Path, checkpoint: Path, keep_ids: bool, args) -> dict:
    options = IngestOptions(fps=5.0, keep=2, keep_ids=keep_ids)
    plain = build_track_index(work / "plain", checkpoint, [video], detections=mot, options=options, progress=False)
    job = RayJob(str(work / "segments"), str(checkpoint), str(mot), None, None, asdict(options))
    job.segment_seconds, job.segment_overlap = args.segment_seconds, args.segment_overlap
    worker, tracks = SegmentWorker(asdict(job)), RayTracks("local", progress=False)
    (source,), _ = find_sources([video])
    ((_, segments),), _ = tracks._plan([source], job)
    rows = [json.dumps({"source": asdict(source), "segment": asdict(s)}) for s in segments]
    record = tracks._join(source, segments, [json.loads(worker.one(row)) for row in rows], job)
    same = [a for a in plain.entries if any(all(a[f] == b[f] for f in FIELDS) for b in tracks.entries)]
    shutil.rmtree(work / "plain")
    shutil.rmtree(work / "segments")
    out = {"tracks_one_process": len(plain), "tracks_segments": len(tracks.entries), "same_tracks": len(same)}
    out.update(boxes_one_process=plain.meta["sources"][0]["boxes"], boxes_segments=record["boxes"])
    if len(same) == len(plain) == len(tracks.entries):
        out["max_vector_difference"] = float(np.abs(np.asarray(plain.features) - tracks.features()).max())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    parser.add_argument("--segment-overlap", type=float, default=2.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ssan-bench-segments-"))
    try:
        scene, checkpoint = work / "scene", street_and_model(work, args.seconds, args.people, (144, 256), seed=1)
        report = {**vars(args)}
        for name, keep_ids in (("bytetrack", False), ("keep_ids", True)):
            report[name] = compare(work, scene / "video.mp4", scene / "gt" / "gt.txt", checkpoint, keep_ids, args)
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
