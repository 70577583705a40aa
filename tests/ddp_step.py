"""One training step of a tiny run, saving the gradients, the logged loss terms and its host syncs (not a test file).

    python tests/ddp_step.py PREPARED OUT [section.key=value ...]          # one process
    torchrun --nproc_per_node 2 tests/ddp_step.py PREPARED OUT [...]       # DDP

The semi-hard negative of each anchor is made deterministic (the first candidate in batch order)
so that both launches mine the same triplets; everything else is the library's own code.
"""

import sys

import torch

import ssan.losses.ranking as ranking
from ssan import distributed
from ssan.config import load_config
from ssan.engine.profiling import count_syncs
from ssan.engine.trainer import Trainer


def first_candidate(candidates, generator):
    return candidates.to(torch.uint8).argmax(dim=1)


def main() -> None:
    data, out, epoch, *overrides = sys.argv[1:]
    ranking._uniform_pick = first_candidate
    info = distributed.init_distributed("cpu")
    trainer = Trainer.from_config(load_config("synth", overrides), data, f"{out}/run", device="cpu")
    trainer.sampler.set_epoch(0, 0, 1)
    batch = next(iter(trainer.loader()))
    with count_syncs(host=[batch["lengths"], batch["weak_lengths"]]) as syncs:
        terms = trainer.train_step(batch, epoch=int(epoch), step=0)
    names = sorted(terms)
    logged = distributed.average(torch.stack([terms[n].double() for n in names]))
    params = list(trainer.model.named_parameters()) + [
        (f"criterion.{n}", p) for n, p in trainer.criterion.named_parameters()
    ]
    grads = {name: p.grad.detach().clone() for name, p in params if p.grad is not None}
    if info.is_main:
        torch.save(
            {"grads": grads, "terms": dict(zip(names, logged.tolist())), "world": info.world_size, "syncs": syncs},
            f"{out}/step.pt",
        )
    distributed.cleanup()


if __name__ == "__main__":
    main()
