"""The evaluation and reporting side of a run: per-epoch rows, the selected epoch, ``results.json``.

Mixed into :class:`ssan.engine.trainer.Trainer` (its attributes: ``config``, ``prepared``,
``model``, ``device``, ``dist``, ``hooks``, ``history``, ``best``, ``epoch``, ``writer``...).
What the rows and ``results.json`` hold is :mod:`ssan.engine.results`.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from ssan import distributed
from ssan.engine import results as reports
from ssan.engine.state import best_model


class RunReports:
    """Evaluation, selection and the final figures of a :class:`~ssan.engine.trainer.Trainer`."""

    def evaluate(self, split: str, model: Optional[nn.Module] = None) -> Optional[dict]:
        """Figures of ``model`` (default: the trained one) on ``split``; every process takes part,
        process 0 gets the results (the others None)."""
        from ssan.data.tokenizers import model_tokenizer
        from ssan.evaluation import RetrievalEvaluator

        if split not in self._evaluators:
            data = self.config.data
            self._evaluators[split] = RetrievalEvaluator(
                self.prepared,
                split,
                height=data.height,
                width=data.width,
                max_length=data.max_length,
                batch_size=data.eval_batch_size,
                num_workers=data.num_workers,
                progress=self.dist.is_main,
                channels_last=self.config.train.channels_last,
                vocab=model_tokenizer(getattr(self.model, "arch", {}), self.prepared.vocab, data.max_length),
            )
        model = model if model is not None else self.model
        distributed.broadcast_buffers(model)  # every process evaluates a share with process 0's statistics
        self.hooks.before_evaluation(self, split)
        results = self._evaluators[split](model, self.device)  # in fp32
        self.hooks.after_evaluation(self, split, results)
        return results

    def _epoch_row(self, losses: dict, seconds: float, steps: int, lr: float) -> tuple:
        cfg = self.config
        pairs = steps * cfg.data.batch_size
        row = {
            "epoch": self.epoch,
            "lr": lr,
            "time_s": round(seconds, 3),
            "steps": steps,
            "pairs_per_s": round(pairs / seconds, 2) if seconds > 0 else None,
        }
        row.update({f"loss/{key}": value for key, value in losses.items()})
        improved = False
        if self.epoch % max(1, cfg.train.eval_every) == 0 or self.epoch == cfg.optim.epochs:
            splits = [self.select_split]
            if cfg.train.test_every_epoch and self.select_split != "test" and "test" in self.prepared.splits:
                splits.append("test")
            for split in splits:
                results = self.evaluate(split)
                if split == "test":  # every process records it: the final figures may reuse it
                    self._last_test = (self.epoch, results)
                if results is not None:
                    row.update(reports.flatten_metrics(split, results))
                    improved = improved or (split == self.select_split and self._update_best(results))
            self.best, improved = distributed.broadcast_object((self.best, improved))  # the same decisions everywhere
        return row, improved

    def _update_best(self, results: dict) -> bool:
        cfg = self.config.train
        value = reports.selection_value(results, cfg.select_term, cfg.select_metric)
        if self.best is not None and value <= self.best["value"]:
            return False
        self.best = {
            "epoch": self.epoch,
            "split": self.select_split,
            "term": cfg.select_term,
            "metric": cfg.select_metric,
            "value": value,
        }
        return True

    def _final_results(self) -> dict:
        """Test figures of the last and the selected epoch and the reference's protocol, in ``results.json``."""
        self.writer.wait()
        tested = self._last_test is not None and self._last_test[0] == self.epoch  # the same weights
        results: dict = {
            "selection": self.best,
            "epochs": self.epoch,
            "test_last": self._last_test[1] if tested else self.evaluate("test"),
        }
        if self.best is not None and self.select_split != "test":
            best_is_last = self.best["epoch"] == self.epoch
            results["test_selected"] = results["test_last"] if best_is_last else self.evaluate("test", best_model(self))
            results["test_selected_label"] = f"epoch {self.best['epoch']} selected on {self.select_split}"
        elif self.best is not None:
            results["test_selected_label"] = (
                f"epoch {self.best['epoch']} selected on the test split (the field's practice; optimistic)"
            )
        results["reference_protocol"] = reports.reference_protocol(self.history)
        distributed.run_on_main(
            lambda: reports.write_results(self.output_dir / "results.json", results), "writing results.json"
        )
        return results
