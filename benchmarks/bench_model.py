"""Measure the SSAN model and objective on this machine's CPU; prints measured figures only.

Sections (``--sections``, default all):
  text   text side of the paper model (embeddings + BiLSTM + WAM + projections + relation),
         batch 64, caption lengths 20-60, 5,000-word table: captions per second.
  wam    batched Word Attention Module versus a per-sample Python loop like the reference's
         (forward + backward, paper widths, batch 64): both times and their ratio.
  step   one training step (forward + backward + Adam step of model and criterion) of the
         full paper model (ResNet-50, 11,000 classes) at batch 8, 384x128: seconds per step.
  small  the CPU demo configuration (small CNN, 64x32): parameter counts, inference speed
         and training pairs per second at batch 64.
Peak resident memory (getrusage) is printed after each section.

    python benchmarks/bench_model.py [--sections text,wam,step,small] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from ssan.losses import SSANCriterion
from ssan.models import SSAN, WordAttention


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (seconds)."""
    return timed_cpu(fn, repeats, warmup)[0]


def timed_cpu(fn, repeats: int, warmup: int = 1) -> tuple:
    """(median wall, median process CPU) seconds of ``fn()``.

    On a shared machine the CPU time of a single-threaded run approximates its wall time on
    an idle core, so both are reported where it matters.
    """
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def captions(batch: int, low: int, high: int, vocab: int, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (batch,), generator=gen)
    tokens = torch.randint(1, vocab, (batch, high), generator=gen)
    tokens[torch.arange(high)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths


def train_batch(batch: int, height: int, width: int, vocab: int, low: int, high: int, classes: int) -> dict:
    tokens, lengths = captions(batch, low, high, vocab, seed=1)
    weak_tokens, weak_lengths = captions(batch, low, high, vocab, seed=2)
    return {
        "image": torch.randn(batch, 3, height, width),
        "tokens": tokens,
        "lengths": lengths,
        "weak_tokens": weak_tokens,
        "weak_lengths": weak_lengths,
        "label": torch.arange(batch) % max(2, min(classes, batch // 2)),
    }


def make_step(model: SSAN, criterion: SSANCriterion, batch: dict):
    params = list(model.parameters()) + list(criterion.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-4)

    def step() -> None:
        out = model(batch)
        loss = criterion(out["image"], out["text"], out["weak_text"], batch["label"], epoch=0)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def bench_text(repeats: int) -> None:
    torch.manual_seed(0)
    model = SSAN(5000)  # paper widths; only encode_text runs
    tokens, lengths = captions(64, 20, 60, 5000)
    model.eval()
    with torch.no_grad():
        seconds = timed(lambda: model.encode_text(tokens, lengths), repeats)
    print(f"[text] paper widths, eval, batch 64, lengths 20-60: {seconds:.3f} s/batch, {64 / seconds:.1f} captions/s")
    model.train()
    seconds = timed(lambda: model.encode_text(tokens, lengths)["relation"].sum().backward(), 1, warmup=0)
    print(f"[text] train forward+backward, batch 64: {seconds:.3f} s/batch, {64 / seconds:.1f} captions/s")


def wam_loop(wam: WordAttention, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-sample loop like the reference's WAM."""
    rows = []
    for b in range(words.size(0)):
        e = words[b, : int(lengths[b])]
        s = torch.sigmoid(wam.score(e))
        rows.append((s.unsqueeze(-1) * e.unsqueeze(1)).max(dim=0).values)
    return torch.stack(rows)


def bench_wam(repeats: int) -> None:
    torch.manual_seed(0)
    wam = WordAttention(2048, 6)
    _, lengths = captions(64, 20, 60, 5000)
    mask = torch.arange(60)[None, :] < lengths[:, None]
    words = (torch.rand(64, 60, 2048) * 2 - 1) * mask[..., None]
    words.requires_grad_(True)
    batched = timed(lambda: wam(words, mask)[0].sum().backward(), repeats)
    looped = timed(lambda: wam_loop(wam, words, lengths).sum().backward(), repeats)
    with torch.no_grad():
        gap = (wam(words, mask)[0] - wam_loop(wam, words, lengths)).abs().max().item()
    print(
        f"[wam] batch 64, C=2048, K=6, forward+backward: batched {batched * 1e3:.1f} ms, "
        f"per-sample loop {looped * 1e3:.1f} ms, ratio {looped / batched:.2f}x (max output difference {gap:.1e})"
    )


def bench_paper_step(repeats: int) -> None:
    torch.manual_seed(0)
    model = SSAN(5000).train()
    criterion = SSANCriterion(num_classes=11000, num_parts=6, embed_dim=1024)
    batch = train_batch(8, 384, 128, 5000, 20, 60, 11000)
    print(f"[step] paper model {count(model) / 1e6:.2f} M parameters, criterion {count(criterion) / 1e6:.2f} M")
    seconds, cpu = timed_cpu(make_step(model, criterion, batch), repeats)
    print(f"[step] batch 8, 384x128, forward+backward+Adam: {seconds:.2f} s/step (process CPU {cpu:.2f} s)")


def bench_small(repeats: int, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = SSAN(
        args.small_vocab,
        embed_dim=args.small_embed,
        word_dim=args.small_word,
        hidden_dim=args.small_hidden,
        backbone="small",
        cnn_width=args.small_width,
    ).train()
    criterion = SSANCriterion(
        num_classes=args.small_classes, num_parts=6, embed_dim=args.small_embed, contrastive_weight=1.0
    )
    print(
        f"[small] embed {args.small_embed}, word {args.small_word}, hidden {args.small_hidden}, "
        f"cnn_width {args.small_width}, vocab {args.small_vocab}: backbone {count(model.backbone) / 1e6:.3f} M, "
        f"model {count(model) / 1e6:.3f} M, criterion {count(criterion) / 1e6:.3f} M parameters"
    )
    batch = train_batch(64, 64, 32, args.small_vocab, 12, 35, args.small_classes)
    seconds, cpu = timed_cpu(make_step(model, criterion, batch), repeats)
    print(
        f"[small] training step, batch 64, 64x32, lengths 12-35: {seconds * 1e3:.0f} ms/step, "
        f"{64 / seconds:.0f} pairs/s (process CPU {cpu * 1e3:.0f} ms/step, {64 / cpu:.0f} pairs per CPU-second)"
    )
    model.eval()
    with torch.no_grad():
        images = torch.randn(256, 3, 64, 32)
        tokens, lengths = captions(256, 12, 35, args.small_vocab)
        image_s = timed(lambda: model.encode_image(images), repeats)
        text_s = timed(lambda: model.encode_text(tokens, lengths), repeats)
    print(f"[small] inference, batch 256: {256 / image_s:.0f} images/s, {256 / text_s:.0f} captions/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="text,wam,step,small")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--small-embed", type=int, default=256)
    parser.add_argument("--small-word", type=int, default=128)
    parser.add_argument("--small-hidden", type=int, default=128)
    parser.add_argument("--small-width", type=int, default=32)
    parser.add_argument("--small-vocab", type=int, default=200)
    parser.add_argument("--small-classes", type=int, default=500)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load}")
    sections = {
        "text": lambda: bench_text(args.repeats),
        "wam": lambda: bench_wam(args.repeats),
        "step": lambda: bench_paper_step(max(1, args.repeats - 1)),
        "small": lambda: bench_small(args.repeats, args),
    }
    for name in args.sections.split(","):
        start = time.perf_counter()
        sections[name.strip()]()
        load = os.getloadavg()[0]
        print(
            f"  ({name.strip()}: {time.perf_counter() - start:.0f} s, peak RSS so far {peak_rss_mib():.0f} MiB, "
            f"load average {load:.1f})"
        )


if __name__ == "__main__":
    main()
