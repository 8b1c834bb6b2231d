"""Configuration schema: our dataclasses next to TRL's `SFTConfig` and `ModelConfig`, parsed by `TrlParser`.

Every stage (prepare, train, merge, evaluate) parses the same four dataclasses, so one recipe drives the whole
chain and an unknown key in it is an error in every stage. Each stage's `--output_dir` is that stage's own output.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, SFTConfig, TrlParser

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A user-facing configuration or input problem: the message names the problem and the fix."""


@dataclass
class DataArguments:
    """Where the articles and summaries come from and how they are turned into prompt-completion rows."""

    dataset_name: str = field(
        default="EdinburghNLP/xsum",
        metadata={"help": "Hub dataset id, a local JSONL/JSON/CSV/parquet file, a folder of split files, "
                          "or a folder written by prepare_data.py."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_revision: str | None = field(
        default=None,
        metadata={"help": "Hub revision. XSum's loading script no longer runs on datasets>=4; use "
                          "`refs/convert/parquet` to read the hub's parquet conversion."},
    )
    text_column: str = field(default="document", metadata={"help": "Column holding the article."})
    summary_column: str = field(default="summary", metadata={"help": "Column holding the reference summary."})
    id_column: str | None = field(default="id", metadata={"help": "Column holding a row id (optional)."})
    dataset_train_split: str = "train"
    dataset_eval_split: str = "validation"
    dataset_test_split: str = "test"
    max_train_samples: int | None = field(default=None, metadata={"help": "Seeded subsample of the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Seeded subsample of the eval split."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Seeded subsample of the test split."})
    instruction_path: str = field(
        default="prompts/instruction.txt", metadata={"help": "Text file with the instruction (system turn)."}
    )


@dataclass
class EvalArguments:
    """Generation, scoring and merge options (evaluate.py, merge.py)."""

    adapter_path: str | None = field(default=None, metadata={"help": "LoRA adapter folder to apply to the base."})
    predictions_file: str | None = field(
        default=None, metadata={"help": "Score this JSONL (`prediction`, `reference` fields) without generating."}
    )
    baseline: str | None = field(
        default=None, metadata={"help": "`lead`: score the article's first line as the summary.", "choices": ["lead"]}
    )
    eval_split: str = field(default="test", metadata={"help": "Which split evaluate.py scores."})
    max_new_tokens: int = 64
    num_beams: int = field(default=1, metadata={"help": "1 = greedy decoding; >1 = beam search."})
    generation_batch_size: int = field(default=16, metadata={"help": "Rows generated per batch."})
    bootstrap_samples: int = field(default=1000, metadata={"help": "Resamples for the 95% confidence intervals."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "merge.py: replace an existing output."})


def _check(data_args: DataArguments, eval_args: EvalArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Collect every inconsistency and raise once (litgpt's validate_args style)."""
    problems = []
    for name in ("max_train_samples", "max_eval_samples", "max_test_samples"):
        value = getattr(data_args, name)
        if value is not None and value <= 0:
            problems.append(f"`{name}` must be a positive number of rows, got {value}.")
    if eval_args.predictions_file and eval_args.baseline:
        problems.append("Give either `--predictions_file` or `--baseline`, not both.")
    if eval_args.max_new_tokens <= 0:
        problems.append(f"`max_new_tokens` must be positive, got {eval_args.max_new_tokens}.")
    if eval_args.num_beams < 1:
        problems.append(f"`num_beams` must be at least 1, got {eval_args.num_beams}.")
    if training_args.fp16 and training_args.bf16:
        problems.append("Both `fp16` and `bf16` are set: choose one (fp16 on a T4, bf16 on Ampere or newer).")
    if model_args.load_in_4bit and model_args.load_in_8bit:
        problems.append("Both `load_in_4bit` and `load_in_8bit` are set: choose one.")
    if training_args.max_length is None or training_args.max_length <= 0:
        problems.append("`max_length` must be a positive token count (prompt + summary + EOS).")
    if problems:
        raise ConfigError(" ".join(problems))


def parse_args(argv: list[str] | None = None) -> tuple[DataArguments, EvalArguments, SFTConfig, ModelConfig]:
    """Parse `--config recipe.yaml` plus CLI overrides into the four dataclasses; unknown keys are fatal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv) or not Path(argv[index + 1]).is_file():
            path = argv[index + 1] if index + 1 < len(argv) else "(none)"
            raise ConfigError(f"Recipe file not found: {path}. Pass an existing YAML file to --config.")
    parser = TrlParser((DataArguments, EvalArguments, SFTConfig, ModelConfig))
    # TRL defaults to bf16=True, which fails on CPUs and T4s before any recipe is read; precision is the recipe's
    # choice, so the project default is full precision and every GPU recipe sets fp16 or bf16 explicitly.
    parser.set_defaults_with_config(bf16=False)
    try:
        data_args, eval_args, training_args, model_args = parser.parse_args_and_config(argv)
    except ValueError as err:
        message = str(err)
        if message.startswith("Unknown arguments from config file"):
            keys = message.split(": ", 1)[1].split(". Please")[0]
            raise ConfigError(f"Unknown key(s) in the recipe: {keys}. Fix the spelling or remove them; "
                              "`python train.py --help` lists every valid key.") from None
        if "doesn't support bf16" in message:
            raise ConfigError("bf16 is set but this machine has no GPU with bf16 support. On a T4 use "
                              "recipes/phi-2/qlora-t4.yaml (fp16); on a CPU set `bf16: false`.") from None
        raise ConfigError(message) from None
    _check(data_args, eval_args, training_args, model_args)
    return data_args, eval_args, training_args, model_args
