"""Calibration objectives: the loss f(theta) that Frank-Wolfe minimises.

An objective knows which transformers auto-class to load and how to turn one padded batch
into a summed loss. `evaluate` runs it over the calibration set with gradient accumulation,
so the accumulated gradient is exactly that of the weighted mean over target tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mergekit_fw.fw.progress import progress
from mergekit_fw.settings import FWConfigError

IGNORE_INDEX = -100  # label of positions without a loss (the transformers convention)


@dataclass
class Batch:
    task: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # [B, W] per token (causal LM) or [B, 1] per sample (classifier)
    scale: float  # task weight / (task targets * total weight)
    task_targets: int  # targets in this batch's whole task
    token_type_ids: torch.Tensor | None = None
    # [B] per-sample factor of its summed loss (reduction: sample_mean: 1 / its targets)
    row_weights: torch.Tensor | None = None

    def inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids
        return inputs


@dataclass
class LossReport:
    total: float
    per_task: dict[str, float]


def _auto(name: str):
    import transformers

    return getattr(transformers, name)


class _Supervised:
    """An objective on labelled data, for one transformers auto-class."""

    needs_labels = True
    auto_class_name = ""

    @classmethod
    def auto_class(cls):
        return _auto(cls.auto_class_name)


class CausalLMObjective(_Supervised):
    """Next-token cross-entropy of the target tokens, summed per batch (each sample's sum
    times its row weight, if any); the batches' scale makes it a mean per target token or
    per sample (settings.reduction), per task, then task-weighted."""

    name, sequence_level, auto_class_name = "causal_lm", False, "AutoModelForCausalLM"

    def batch_loss_sum(self, model, batch: Batch) -> torch.Tensor:
        logits = model(**batch.inputs()).logits[:, :-1].float()
        targets = batch.labels[:, 1:]
        if batch.row_weights is None:
            return F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        per_token = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        return _weighted_rows(per_token.sum(dim=1), batch)


class ClassificationObjective(_Supervised):
    """Cross-entropy of a sequence classifier (e.g. BertForSequenceClassification)."""

    name, sequence_level = "classification", True
    auto_class_name = "AutoModelForSequenceClassification"

    def batch_loss_sum(self, model, batch: Batch) -> torch.Tensor:
        logits = model(**batch.inputs()).logits.float()
        return F.cross_entropy(logits, batch.labels[:, 0], reduction="sum")


def _weighted_rows(per_sample: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Sum of per-sample losses, each times its row weight (when the batch has them)."""
    if batch.row_weights is None:
        return per_sample.sum()
    return (per_sample * batch.row_weights.to(per_sample.dtype)).sum()


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


class EntropyObjective:
    """Mean prediction entropy on unlabelled inputs (AdaMerging-style test-time objective).

    Causal LMs: next-token entropy at every position that has a next token (text records) or
    at the response positions (prompt/response records). Classifiers: entropy of the class
    distribution, one term per sample. Labels, if present, are ignored.
    """

    name = "entropy"
    needs_labels = False

    def __init__(self, sequence_level: bool):
        self.sequence_level = sequence_level

    def auto_class(self):
        if self.sequence_level:
            return _auto("AutoModelForSequenceClassification")
        return _auto("AutoModelForCausalLM")

    def batch_loss_sum(self, model, batch: Batch) -> torch.Tensor:
        logits = model(**batch.inputs()).logits
        if self.sequence_level:
            return _entropy(logits).sum()
        mask = batch.labels[:, 1:] != IGNORE_INDEX
        return _weighted_rows((_entropy(logits[:, :-1]) * mask).sum(dim=1), batch)


# an objective a recipe can name (the Python API also takes a callable: fw/user_loss.py)
NamedObjective = CausalLMObjective | ClassificationObjective | EntropyObjective


def make_objective(name: str, architectures: list[str] | None) -> NamedObjective:
    """The objective a recipe names, checked against the base model's architecture."""
    arch = (architectures or [""])[0]
    is_classifier = arch.endswith("ForSequenceClassification")
    if name == "causal_lm":
        if is_classifier:
            raise FWConfigError(
                f"The base model is a {arch}; use `objective: classification` (or entropy)."
            )
        return CausalLMObjective()
    if name == "classification":
        if not is_classifier:
            raise FWConfigError(
                f"`objective: classification` needs a *ForSequenceClassification base model; the "
                f"base is {arch or 'unknown'}. Save the base and the experts with one shared "
                "classification head (same num_labels)."
            )
        return ClassificationObjective()
    if name == "entropy":
        return EntropyObjective(sequence_level=is_classifier)
    raise FWConfigError(f"Unknown objective {name!r}.")


def evaluate(
    model: torch.nn.Module,
    objective,
    batches: list[Batch],
    task_names: list[str],
    *,
    grad: bool,
    desc: str = "loss",
    quiet: bool = False,
) -> LossReport:
    """Weighted mean calibration loss; with grad=True also accumulates its gradient."""
    task_sums = [0.0] * len(task_names)
    task_targets = [0] * len(task_names)
    total = 0.0
    with torch.set_grad_enabled(grad):
        for batch in progress(batches, desc, quiet=quiet):
            summed = objective.batch_loss_sum(model, batch)
            contribution = summed * batch.scale
            if grad:
                contribution.backward()
            total += contribution.item()
            task_sums[batch.task] += summed.item()
            task_targets[batch.task] = batch.task_targets
    per_task = {name: task_sums[i] / max(task_targets[i], 1) for i, name in enumerate(task_names)}
    return LossReport(total=total, per_task=per_task)
