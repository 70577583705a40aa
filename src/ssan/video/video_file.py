"""Video files, decoded by PyAV (FFmpeg) as a stream: only the frame being processed is in memory.

Damage is reported, not fatal where it need not be: a file that cannot be opened (missing,
not a video, cut before its index, no decoder for its codec) raises :class:`VideoError`;
packets that fail to decode mid-file are skipped and counted, and a stream that gives up or
ends well before its stated duration stops with a warning naming the file and the time
reached, keeping the frames before it.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from ssan.video._deps import av_module
from ssan.video.errors import VideoError
from ssan.video.frame import Frame

log = logging.getLogger(__name__)

MAX_BAD_PACKETS = 25  # damaged packets in a row after which a stream is given up
EARLY_END_S = 1.0  # a stream that ends this much before its stated duration is reported as truncated


def _codec_name(stream) -> str:
    context = getattr(stream, "codec_context", None)
    return getattr(context, "name", None) or str(getattr(stream, "codec_tag", "") or "unknown")


def _av_reason(exc: Exception) -> str:
    """FFmpeg's reason without the errno and file name PyAV adds."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


class VideoReader:
    """Streaming decoder of one video file; opening decodes its first frame to prove it readable.

    Packets that fail to decode (damaged data mid-file) are skipped and counted; after
    :data:`MAX_BAD_PACKETS` failures in a row the stream is given up with a warning.

    Args:
        path: the video file.
    Attributes:
        width, height: frame size; rate: frames per second (stated); duration: seconds or None.
    """

    def __init__(self, path: Union[str, Path]):
        av = av_module()
        self.path = str(path)
        try:
            self._container = av.open(self.path, options={"err_detect": "ignore_err"})
        except FileNotFoundError:
            raise VideoError(f"video {self.path}: file not found") from None
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise VideoError(
                f"video {self.path}: cannot open ({_av_reason(exc)}: not a video, or cut before its index)"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"video {self.path}: no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self.bad_packets, self.stopped_at = 0, None
        self._decoded = self._decode()
        self._first = self._first_frame(av)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.rate = float(rate) if rate else 25.0
        self.width, self.height = self._first.width, self._first.height
        if self._stream.duration is not None and self._stream.time_base is not None:
            self.duration: Optional[float] = float(self._stream.duration * self._stream.time_base)
        elif self._container.duration is not None:
            self.duration = self._container.duration / 1_000_000
        else:
            self.duration = None

    def _first_frame(self, av):
        try:
            return next(self._decoded)
        except StopIteration:
            reason = "no frame could be decoded"
        except av.DecoderNotFoundError:
            reason = f"no decoder for its codec ({_codec_name(self._stream)})"
        except (av.FFmpegError, OSError) as exc:
            reason = f"cannot decode ({_av_reason(exc)})"
        self._container.close()
        raise VideoError(f"video {self.path}: {reason}")

    def _decode(self):
        av = av_module()
        in_a_row = 0
        for packet in self._container.demux(self._stream):
            try:
                decoded = packet.decode()
            except av.DecoderNotFoundError:
                raise
            except (av.FFmpegError, OSError) as exc:
                self.bad_packets += 1
                in_a_row += 1
                if in_a_row >= MAX_BAD_PACKETS:
                    self.stopped_at = _av_reason(exc)
                    return
                continue
            in_a_row = 0
            yield from decoded

    def frame_at(self, time: float) -> np.ndarray:
        """The first frame at or after ``time`` seconds (H x W x 3 uint8): seeks to a key frame, decodes on."""
        av = av_module()
        stream, best = self._stream, None
        try:
            if time > 0 and stream.time_base is not None:
                self._container.seek(int(time / stream.time_base), stream=stream, backward=True)
            for frame in self._container.decode(stream):
                best = frame
                if frame.time is None or frame.time + 1e-6 >= time:
                    break
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"video {self.path}: cannot read the frame at {time:.2f} s ({_av_reason(exc)})") from None
        if best is None:
            raise VideoError(f"video {self.path}: no frame at {time:.2f} s")
        return best.to_ndarray(format="rgb24")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def expected_frames(self, fps: float) -> Optional[int]:
        """About how many frames :meth:`frames` yields at ``fps`` (for progress bars)."""
        return None if self.duration is None else int(self.duration * min(fps, self.rate)) + 1

    def frames(self, fps: float) -> Iterator[Frame]:
        """Decoded frames sampled at ``fps`` (RGB); damaged stretches are skipped with a warning."""
        number, taken, last_time = 0, 0, 0.0
        for frame in itertools.chain([self._first], self._decoded):
            number += 1
            time = float(frame.time) if frame.time is not None else (number - 1) / self.rate
            last_time = time
            if time + 1e-6 >= taken / fps:
                while taken / fps <= time + 1e-6:
                    taken += 1
                yield Frame(number, time, frame.to_ndarray(format="rgb24"))
        self._report(last_time)

    def frames_between(self, fps: float, start: float, end: Optional[float] = None) -> Iterator[Frame]:
        """The frames of :meth:`frames` with ``start <= time < end`` (same sampling grid, same numbers).

        Seeks to the key frame before ``start`` and decodes on; frame numbers are counted from
        the time (constant frame rate). Meant for a reader that has not yielded frames yet.
        """
        frames = self.frames(fps) if start <= 0 else self._frames_after_seek(fps, start)
        for frame in frames:
            if end is not None and frame.time >= end:
                return
            if frame.time >= start:
                yield frame

    def _frames_after_seek(self, fps: float, start: float) -> Iterator[Frame]:
        first_time = float(self._first.time) if self._first.time is not None else 0.0
        target = max(0.0, start - 1.0 / self.rate)
        self._container.seek(int(target / self._stream.time_base), stream=self._stream, backward=True)
        taken = None
        for frame in self._decode():
            if frame.time is None:
                raise VideoError(f"video {self.path}: a frame without a time stamp after seeking to {start:.2f} s")
            time = float(frame.time)
            if taken is None:
                if time >= start:  # no key frame before start: decode the file from its start
                    with VideoReader(self.path) as whole:
                        yield from whole.frames(fps)
                    return
                taken = 0
                while taken / fps <= time + 1e-6:  # the grid after this frame, as frames() has it
                    taken += 1
                continue
            if time + 1e-6 >= taken / fps:
                while taken / fps <= time + 1e-6:
                    taken += 1
                number = round((time - first_time) * self.rate) + 1
                yield Frame(number, time, frame.to_ndarray(format="rgb24"))

    def _report(self, last_time: float) -> None:
        if self.stopped_at is not None:
            log.warning(
                "video %s: decoding gave up at %.2f s after %d damaged packets (%s); kept the frames before it",
                self.path,
                last_time,
                self.bad_packets,
                self.stopped_at,
            )
        elif self.bad_packets:
            log.warning(
                "video %s: skipped %d damaged packet(s); the frames around them are missing",
                self.path,
                self.bad_packets,
            )
        if self.duration is not None and last_time < self.duration - EARLY_END_S:
            log.warning(
                "video %s: ended at %.2f s of its stated %.2f s (truncated?); kept what was decoded",
                self.path,
                last_time,
                self.duration,
            )
