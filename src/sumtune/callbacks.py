"""ROUGE during training: every evaluation, summarize a fixed seeded validation subset and log ROUGE to TensorBoard.

The Trainer's eval loss says how well the model predicts the reference; ROUGE on generated text says how well it
summarizes, and the two part ways once the model starts to overfit or stops ending its summaries.
"""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

from .decoding import Decoding
from .metrics import SCORES, rouge_per_example

logger = logging.getLogger(__name__)


class RougeCallback(TrainerCallback):
    """After each evaluation, the main process generates for `prompts` and logs `eval_rouge1/2/L` and the seconds it
    took (`eval_rouge_seconds`), so the cost against training time is visible in the same curves.

    Under FSDP every rank must join each forward pass, so generation on one rank would hang: not supported there.
    """

    def __init__(self, trainer, prompts: list[list[dict]], references: list[str], decoding: Decoding):
        self.trainer = trainer
        self.prompts, self.references = prompts, references
        self.decoding = decoding

    def on_evaluate(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        model, tokenizer = self.trainer.model, self.trainer.processing_class
        was_training, padding_side = model.training, tokenizer.padding_side
        start = time.perf_counter()
        try:
            predictions = self.decoding.generate(model, tokenizer, self.prompts)
        finally:  # generation pads on the left and switches to eval mode; training continues as it was
            tokenizer.padding_side = padding_side
            model.train(was_training)
        scores = rouge_per_example(predictions, self.references)
        metrics = {f"eval_{key}": float(scores[key].mean()) for key in SCORES}
        metrics["eval_rouge_seconds"] = time.perf_counter() - start
        self.trainer.log(metrics)
