"""Trainer hooks: user code that runs at fixed moments of training, without editing the trainer.

Subclass :class:`Hook` and override the moments you need; pass instances to the trainer
(``Trainer(..., hooks=[MyHook()])`` or ``Trainer.from_config(..., hooks=[...])``)::

    class PrintLoss(Hook):
        def after_step(self, trainer, epoch, step, losses):
            if losses is not None:
                print(epoch, step, losses["total"])

Moments, in order: ``before_train`` (after a resume has been restored) / per epoch
``before_epoch`` / per step ``before_step`` and ``after_step`` / ``before_evaluation`` and
``after_evaluation`` for each split evaluated / ``after_epoch`` (after the epoch's checkpoint) /
``after_train`` (after ``results.json``). ``losses`` in ``after_step`` is the dict of running
means (floats) on the steps where the trainer reads them (every ``train.log_every`` steps and
at the end of an epoch), else None: reading device values every step would stall a GPU.
A hook that raises stops training with that exception (the last checkpoint stays as it was).
"""

from __future__ import annotations

from typing import Iterable, Optional


class Hook:
    """Base class; every method does nothing."""

    def before_train(self, trainer) -> None:
        pass

    def after_train(self, trainer, results: dict) -> None:
        pass

    def before_epoch(self, trainer, epoch: int) -> None:
        pass

    def after_epoch(self, trainer, epoch: int, row: dict) -> None:
        pass

    def before_step(self, trainer, epoch: int, step: int) -> None:
        pass

    def after_step(self, trainer, epoch: int, step: int, losses: Optional[dict]) -> None:
        pass

    def before_evaluation(self, trainer, split: str) -> None:
        pass

    def after_evaluation(self, trainer, split: str, results: Optional[dict]) -> None:
        pass


class HookList(Hook):
    """Calls each hook in order."""

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks = list(hooks)
        for hook in self.hooks:
            if not isinstance(hook, Hook):
                raise TypeError(f"trainer hooks must be ssan.engine.hooks.Hook instances, got {hook!r}")

    def _call(self, name: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, name)(*args)

    def before_train(self, trainer) -> None:
        self._call("before_train", trainer)

    def after_train(self, trainer, results: dict) -> None:
        self._call("after_train", trainer, results)

    def before_epoch(self, trainer, epoch: int) -> None:
        self._call("before_epoch", trainer, epoch)

    def after_epoch(self, trainer, epoch: int, row: dict) -> None:
        self._call("after_epoch", trainer, epoch, row)

    def before_step(self, trainer, epoch: int, step: int) -> None:
        self._call("before_step", trainer, epoch, step)

    def after_step(self, trainer, epoch: int, step: int, losses: Optional[dict]) -> None:
        self._call("after_step", trainer, epoch, step, losses)

    def before_evaluation(self, trainer, split: str) -> None:
        self._call("before_evaluation", trainer, split)

    def after_evaluation(self, trainer, split: str, results: Optional[dict]) -> None:
        self._call("after_evaluation", trainer, split, results)
