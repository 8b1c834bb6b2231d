"""Configuration schema: our dataclasses next to TRL's `SFTConfig` and `ModelConfig`, parsed by `TrlParser`.

Every stage (prepare, train, merge, evaluate) parses the same four dataclasses, so one recipe drives the whole
chain and an unknown key in it is an error in every stage. Each stage's `--output_dir` is that stage's own output.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser
from trl import ModelConfig, SFTConfig, TrlParser

from .decoding import Decoding
from .errors import ConfigError, RunError  # noqa: F401  (re-exported: the modules' one import of both)

logger = logging.getLogger(__name__)


T4_RECIPE = "recipes/phi-2/qlora-t4.yaml"
CPU_RECIPE = "recipes/tiny/demo.yaml"


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
    """Scoring, summarizing and merge options (evaluate.py, summarize.py, merge.py); the decoding settings are
    `decoding` (a `Decoding`, parsed beside this class and attached by parse_args)."""

    decoding: Decoding = field(default_factory=Decoding, init=False, repr=False)

    adapter_path: str | None = field(default=None, metadata={"help": "LoRA adapter folder to apply to the base."})
    predictions_file: str | None = field(
        default=None, metadata={"help": "Score this JSONL (`prediction`, `reference` fields) without generating."}
    )
    baseline: str | None = field(
        default=None, metadata={"help": "`lead`: score the article's first line as the summary.", "choices": ["lead"]}
    )
    eval_split: str = field(default="test", metadata={"help": "Which split evaluate.py scores."})
    dequantize_4bit_base: bool = field(
        default=False,
        metadata={"help": "evaluate.py with a 4-bit base: dequantize each 4-bit weight once before generating (Phi-2: "
                          "~5.2 GB instead of ~1.7 GB) instead of in every forward, as bitsandbytes does for batched "
                          "inputs. Same weight values, faster generation, more memory "
                          "(docs/performance.md#what-paid-generation)."},
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "evaluate.py / summarize.py with --adapter_path: add the adapter to the base weights in "
                          "memory before generating (as merge.py does on disk), so no LoRA layer runs in each forward "
                          "(faster: docs/performance.md#what-paid-generation). With a 4-bit base it needs "
                          "--dequantize_4bit_base true (merging into 4-bit weights would requantize them)."},
    )
    input_file: str | None = field(
        default=None,
        metadata={"help": "summarize.py: one article (a text file; unset or `-`: stdin), or many: a JSONL or CSV file "
                          "with a `text_column` (and an `id_column`), or a folder of .txt files."},
    )
    output_file: str | None = field(
        default=None,
        metadata={"help": "summarize.py: write JSONL (`id`, `summary`) here instead of printing; needed for many "
                          "articles. Its settings are kept beside it (NAME.manifest.json): a re-run with the same "
                          "settings reuses a finished file and resumes a killed one; other settings are refused."},
    )
    rouge_eval_samples: int = field(
        default=0,
        metadata={"help": "train.py: at each evaluation, generate for this many validation rows (a fixed seeded "
                          "subset) and log ROUGE-1/2/L to TensorBoard; 0 or `eval_strategy: no` turns it off."},
    )
    bootstrap_samples: int = field(default=1000, metadata={"help": "Resamples for the 95%% confidence intervals."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the stage's existing output: without it a finished output made with the same "
                          "settings is reused and one made with other settings is refused."},
    )
    merge_base: str = field(
        default="dequantized_4bit",
        metadata={"help": "merge.py with a 4-bit (QLoRA) recipe: `dequantized_4bit` adds the adapter to the 4-bit "
                          "weights it was trained against, dequantized to the recipe's dtype; `original` adds it to "
                          "the original 16-bit checkpoint instead (the adapter never saw those weights: lower ROUGE, "
                          "docs/quality.md).", "choices": ["dequantized_4bit", "original"]},
    )



@dataclass
class TrainArguments(SFTConfig):
    """TRL's SFTConfig plus the global batch, so a recipe trains the same on any number of GPUs."""

    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Sequences per optimizer step over all processes; gradient_accumulation_steps is then "
                          "derived as global_batch_size / (per_device_train_batch_size x processes)."},
    )
    checkpoint_every_n_layers: int = field(
        default=1,
        metadata={"help": "With gradient_checkpointing: recompute only every n-th decoder layer (1 = all of them); "
                          "the others keep their activations, which is faster and takes more memory."},
    )
    uncheckpointed_layers: int = field(
        default=0,
        metadata={"help": "With gradient_checkpointing: keep the activations of the last N decoder layers instead of "
                          "recomputing them: faster, and each kept layer holds its activations for the whole step "
                          "(its memory per layer: docs/performance.md#training-speed)."},
    )
    causal_only_training_attention: bool = field(
        default=False,
        metadata={"help": "Train without the padding mask: batches are padded on the right, so causal attention alone "
                          "keeps real tokens from seeing pads, and SDPA can use its flash kernel. Loss unchanged."},
    )
    compile_decoder_layers: bool = field(
        default=False,
        metadata={"help": "torch.compile each decoder layer for training (eval and generation stay eager): fuses the "
                          "elementwise work around the 4-bit matmuls. The first steps compile (how long: "
                          "docs/performance.md#training-speed)."},
    )


@dataclass(frozen=True)
class Range:
    """The values one numeric setting may take: finite, from `low` to `high` (None: unbounded), each bound included
    unless `low_open` / `high_open`; `off` is one more value that turns the setting off. Unset (None) always passes:
    for an optional setting it means off or the library's default."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    off: float | None = None
    why: str = ""

    def allows(self, value: float | None) -> bool:
        if value is None or (self.off is not None and value == self.off):
            return True
        if not math.isfinite(value):
            return False
        above_low = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below_high = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above_low and below_high

    def describe(self) -> str:
        bounds = []
        if self.low is not None:
            bounds.append(f"{'greater than' if self.low_open else 'at least'} {_number(self.low)}")
        if self.high is not None:
            bounds.append(f"{'below' if self.high_open else 'at most'} {_number(self.high)}")
        text = " and ".join(bounds) or "a finite number"
        return text + (f", or {_number(self.off)}" if self.off is not None else "")


def _number(value) -> str:
    """A number as a person writes it: 1 rather than 1.0, 4294967295 rather than 4.29497e+09, 2e-05 as is."""
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else str(int(value))


def at_least(low: float, why: str = "", off: float | None = None) -> Range:
    return Range(low=low, off=off, why=why)


def above(low: float, why: str = "") -> Range:
    return Range(low=low, low_open=True, why=why)


def fraction(why: str = "", low_open: bool = False) -> Range:
    """From 0 (excluded with `low_open`) up to but not including 1: a probability or a momentum."""
    return Range(low=0, high=1, low_open=low_open, high_open=True, why=why)


STEPS = "a step count, or below 1 a fraction of the run's steps"
SEED = Range(low=0, high=2**32 - 1, why="numpy's seed range; set_seed seeds numpy too")

# Every numeric setting a recipe or flag can set: name -> the values that do what the name says, with a reason where the
# bound is not obvious. parse_args checks them in every stage before anything is built or written; a setting missing
# here reaches the libraries unchecked, where a bad value is a traceback mid-run or a run that silently does nothing.
# A new numeric field gets one row, e.g. `"temperature": above(0, "the logits are divided by it")`;
# tests/test_numeric_args.py fails for a numeric field of ours (or one a recipe sets) without one.
NUMERIC_RANGES: dict[str, Range] = {
    # DataArguments: unset keeps every row
    "max_train_samples": at_least(1, "rows"),
    "max_eval_samples": at_least(1, "rows"),
    "max_test_samples": at_least(1, "rows"),
    # Decoding
    "max_new_tokens": at_least(1),
    "num_beams": at_least(1, "1 = greedy"),
    "no_repeat_ngram_size": at_least(0, "0 = off"),
    "length_penalty": Range(why="an exponent: above 1 favours longer summaries, below 1 shorter"),
    "mbr_candidates": at_least(1, "1 = off"),
    "mbr_epsilon": fraction("a probability cut-off; 0 would keep every token", low_open=True),
    "generation_batch_size": at_least(1, "rows"),
    "generation_max_batch_tokens": at_least(1, "tokens; unset: batches of generation_batch_size rows"),
    "mbr_seed": SEED,
    # EvalArguments: in-training ROUGE, scoring
    "rouge_eval_samples": at_least(0, "rows; 0 = off"),
    "bootstrap_samples": at_least(1, "resamples"),
    # TrainArguments: SFTConfig's and ours
    "learning_rate": above(0, "0 trains nothing"),
    "num_train_epochs": above(0, "0 trains nothing"),
    "max_steps": at_least(1, "-1: train for num_train_epochs instead; 0 trains nothing", off=-1),
    "per_device_train_batch_size": at_least(1),
    "per_device_eval_batch_size": at_least(1),
    "gradient_accumulation_steps": at_least(1, "1 = no accumulation"),
    "global_batch_size": at_least(1, "sequences per optimizer step"),
    "warmup_steps": at_least(0, STEPS),
    "weight_decay": at_least(0, "0 = off"),
    "max_grad_norm": at_least(0, "0 = no clipping"),
    "adam_beta1": fraction(),
    "adam_beta2": fraction(),
    "adam_epsilon": above(0, "it keeps the update's denominator above 0"),
    "label_smoothing_factor": fraction(),
    "logging_steps": above(0, STEPS),
    "eval_steps": above(0, STEPS + "; unset: logging_steps"),
    "save_steps": above(0, STEPS),
    "save_total_limit": at_least(1, "checkpoints kept; unset keeps every one"),
    "max_length": at_least(1, "tokens of prompt + summary + EOS"),
    "dataset_num_proc": at_least(1, "processes; unset: one"),
    "dataloader_num_workers": at_least(0, "0 = load in the main process"),
    "seed": SEED,
    "data_seed": SEED,
    "checkpoint_every_n_layers": at_least(1, "1 = checkpoint every layer"),
    "uncheckpointed_layers": at_least(0),
    # ModelConfig: the adapter
    "lora_r": at_least(1, "the adapter's rank"),
    "lora_alpha": above(0, "it scales the adapter's output; 0 would switch the adapter off"),
    "lora_dropout": fraction("a probability; 1 would drop every input"),
}


def _check_ranges(values: dict, defaults: dict, prog: str) -> None:
    """Every numeric setting in NUMERIC_RANGES checked against its range; every problem raised at once."""
    problems = []
    for key, allowed in NUMERIC_RANGES.items():
        value = values.get(key)
        if allowed.allows(value):
            continue
        why = f" ({allowed.why})" if allowed.why else ""
        default = "unset" if defaults.get(key) is None else _number(defaults[key])
        problems.append(f"`{key}` must be {allowed.describe()}{why}, got {_number(value)}: give it a value in that "
                        f"range (in the recipe or as --{key}) or leave it out (default: {default}).")
    if problems:
        raise ConfigError(" ".join(problems) + f" (`{prog} --help` describes each setting.)")


def _check(data_args: DataArguments, eval_args: EvalArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Collect every inconsistency between settings and raise once (litgpt's validate_args style); each numeric
    setting's own range is NUMERIC_RANGES', checked before the dataclasses are built."""
    problems = []
    if eval_args.predictions_file and eval_args.baseline:
        problems.append("Give either `--predictions_file` or `--baseline`, not both.")
    problems += eval_args.decoding.problems()
    if eval_args.adapter_path and (eval_args.predictions_file or eval_args.baseline):
        problems.append("`--adapter_path` applies to a model, not to `--predictions_file` or `--baseline`: drop one.")
    if training_args.fp16 and training_args.bf16:
        problems.append("Both `fp16` and `bf16` are set: choose one (fp16 on a T4, bf16 on Ampere or newer).")
    if training_args.fp16 and model_args.dtype == "bfloat16":
        problems.append("`fp16: true` with `dtype: bfloat16` mixes two half precisions: on a T4 set `dtype: float16` "
                        f"(see {T4_RECIPE}), on Ampere or newer use `bf16: true`.")
    if training_args.bf16 and model_args.dtype == "float16":
        problems.append("`bf16: true` with `dtype: float16` mixes two half precisions: set `dtype: bfloat16`.")
    if not training_args.gradient_checkpointing and training_args.checkpoint_every_n_layers != 1:
        problems.append("`checkpoint_every_n_layers` only applies with `gradient_checkpointing: true`: turn that on, "
                        "or remove `checkpoint_every_n_layers`.")
    if not training_args.gradient_checkpointing and training_args.uncheckpointed_layers:
        problems.append("`uncheckpointed_layers` only applies with `gradient_checkpointing: true`: turn that on, or "
                        "remove `uncheckpointed_layers` (without checkpointing no layer is recomputed).")
    if training_args.uncheckpointed_layers and training_args.checkpoint_every_n_layers != 1:
        problems.append("Set either `uncheckpointed_layers` or `checkpoint_every_n_layers`, not both.")
    if training_args.global_batch_size is not None:
        if training_args.global_batch_size % training_args.per_device_train_batch_size:
            problems.append(f"`global_batch_size` ({training_args.global_batch_size}) must be a multiple of "
                            f"`per_device_train_batch_size` ({training_args.per_device_train_batch_size}).")
        if training_args.gradient_accumulation_steps != 1:
            problems.append("Set either `global_batch_size` (accumulation is then derived from the number of "
                            "processes) or `gradient_accumulation_steps`, not both.")
    if model_args.load_in_4bit and model_args.load_in_8bit:
        problems.append("Both `load_in_4bit` and `load_in_8bit` are set: choose one.")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        problems.append("A quantized base cannot be trained without adapters: set `use_peft: true` (QLoRA) or "
                        "`load_in_4bit: false`.")
    if training_args.max_length is None:  # its range is in NUMERIC_RANGES; unset, nothing would fit the rows to it
        problems.append("`max_length` must be set: the most tokens of prompt + summary + EOS in a row.")
    if training_args.hub_token:
        problems.append("Never put a hub token in a recipe or on the command line (it would be saved with the run): "
                        "remove `hub_token` and export HF_TOKEN instead.")
    if (training_args.model_init_kwargs or {}).get("trust_remote_code"):
        problems.append("`trust_remote_code` is off in this project: Phi-2 runs on transformers' own code; remove "
                        "it from `model_init_kwargs`.")
    if problems:
        raise ConfigError(" ".join(problems))


def _coerce(action: argparse.Action, key: str, value):
    """Convert one recipe value the way argparse converts a command-line string, or raise ConfigError.

    TrlParser applies recipe values as argparse defaults, which argparse never converts: `learning_rate: abc` would
    reach the trainer as a string (and PyYAML reads `3e-4`, without a dot, as a string too).
    """
    if value is None:
        return None
    if action.nargs in ("+", "*"):
        return [_coerce_one(action, key, item) for item in (value if isinstance(value, list) else [value])]
    return _coerce_one(action, key, value)


def _coerce_one(action: argparse.Action, key: str, value):
    kind = action.type
    if isinstance(value, dict):
        if kind in (str, dict):  # dict-or-JSON-string fields such as gradient_checkpointing_kwargs
            return value
        raise ConfigError(f"Recipe key `{key}` must be a single value, not a mapping ({value!r}).")
    if isinstance(value, list):
        raise ConfigError(f"Recipe key `{key}` takes one value, not a list ({value!r}).")
    if kind is None or kind is str:
        converted = value
    elif kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"Recipe key `{key}` must be a number, got {value!r}.")
        try:
            converted = float(value)
        except ValueError:
            raise ConfigError(f"Recipe key `{key}` must be a number, got {value!r}: fix its value.") from None
    elif kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"Recipe key `{key}` must be a whole number, got {value!r}.")
        try:
            converted = int(value) if not isinstance(value, str) else int(value.strip())
        except ValueError:
            raise ConfigError(f"Recipe key `{key}` must be a whole number, got {value!r}: fix its value.") from None
    else:  # string_to_bool, choice types and the rest parse strings, as on the command line
        if isinstance(value, bool) and getattr(kind, "__name__", "") == "string_to_bool":
            return value
        try:
            converted = kind(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError, KeyError):
            expected = "true or false" if getattr(kind, "__name__", "") == "string_to_bool" else "a valid value"
            raise ConfigError(f"Recipe key `{key}` must be {expected}, got {value!r}: fix its value.") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(str(getattr(c, "value", c)) for c in action.choices)
        raise ConfigError(f"Recipe key `{key}` is {value!r}; valid values: {choices}.")
    return converted


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first is not None:
                raise ConfigError(f"Recipe {self.name} sets `{key}` twice (lines {first} and {line}): keep one of "
                                  "them (YAML would silently use the last).")
            lines[key] = line
        return super().construct_mapping(node, deep)


def _read_recipe(parser: HfArgumentParser, path: str, prog: str = "python train.py") -> dict:
    """The recipe as typed defaults: YAML errors, duplicate and unknown keys and mistyped values become one
    ConfigError."""
    try:
        with open(path, encoding="utf-8") as handle:  # a file stream gives the loader the path for its messages
            config = yaml.load(handle, Loader=_RecipeLoader)  # noqa: S506  (a SafeLoader subclass)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"Recipe {path} is not valid YAML{line}: fix its syntax.") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"Recipe {path} must be a YAML mapping of `key: value` lines.")
    for key, value in (config.pop("env", None) or {}).items():
        os.environ[str(key)] = str(value)
    actions = {action.dest: action for action in parser._actions}
    unknown = [key for key in config if key not in actions or key in ("help", "config")]
    if unknown:
        raise ConfigError(f"Unknown key(s) in the recipe: {unknown}. Fix the spelling or remove them; "
                          f"`{prog} --help` lists every valid key.")
    problems, typed = [], {}
    for key, value in config.items():
        try:
            typed[key] = _coerce(actions[key], key, value)
        except ConfigError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError(" ".join(problems) + f" (in {path})")
    return typed


def _argparse_error(prog: str):
    def error(message: str):
        raise ConfigError(f"{message}. Fix the command-line flag; `{prog} --help` lists every option.")

    return error


def require_model(eval_args: EvalArguments, model_args: ModelConfig, script: str) -> None:
    """Every entry point needs a model (its tokenizer, at least), except evaluate.py scoring a file or a baseline."""
    if model_args.model_name_or_path or eval_args.predictions_file or eval_args.baseline:
        return
    scoring = ", or --baseline lead / --predictions_file FILE to score without one" if script == "evaluate.py" else ""
    raise ConfigError(f"No model given: pass a recipe that names one (--config recipes/phi-2/qlora.yaml, or "
                      f"{CPU_RECIPE} on a CPU) or --model_name_or_path{scoring}.")


SCHEMA = (DataArguments, EvalArguments, Decoding, TrainArguments, ModelConfig)


def _names(*classes) -> frozenset[str]:
    return frozenset(f.name for cls in classes for f in dataclasses.fields(cls) if f.init)


_LORA = frozenset({"use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_parameters",
                   "lora_modules_to_save", "lora_task_type", "use_rslora", "use_dora"})
_LOADING = _names(ModelConfig) - _LORA  # which weights, in which precision and quantization
_GENERATING = _LOADING | _names(Decoding) | {"adapter_path", "dequantize_4bit_base", "merge_adapter", "seed",
                                              "max_length", "chat_template_path", "instruction_path", "use_cpu"}
# The settings each entry point honours (dataclass field names). One recipe drives every stage, and each stage reads
# only its own keys of it; on the command line a stage takes only these, and its --help lists only these.
STAGE_SETTINGS: dict[str, frozenset[str]] = {
    "prepare_data.py": _names(DataArguments) | {"model_name_or_path", "model_revision", "output_dir", "max_length",
                                                "seed", "chat_template_path", "dataset_num_proc",
                                                "overwrite_output_dir"},
    "train.py": (_names(DataArguments, TrainArguments, ModelConfig, Decoding)
                 | {"rouge_eval_samples", "overwrite_output_dir"}),
    "merge.py": _LOADING | {"adapter_path", "merge_base", "output_dir", "chat_template_path", "overwrite_output_dir"},
    "evaluate.py": (_GENERATING | _names(DataArguments)
                    | {"predictions_file", "baseline", "eval_split", "bootstrap_samples", "output_dir",
                       "dataset_num_proc", "overwrite_output_dir"}),
    "summarize.py": _GENERATING | {"input_file", "output_file", "text_column", "id_column", "overwrite_output_dir"},
}


def _flags(argv: list[str]) -> list[str]:
    """The setting names given on a command line (`--name value`, `--name=value`, `--name`)."""
    return [arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--") and len(arg) > 2]


def _check_stage_flags(argv: list[str], script: str, prog: str) -> None:
    """A flag that another stage honours is refused by name, with the stage that takes it."""
    allowed, known = STAGE_SETTINGS[script], _names(*SCHEMA)
    problems = []
    for name in dict.fromkeys(_flags(argv)):
        base = name[3:] if name.startswith("no_") and name[3:] in known else name
        if base in known and base not in allowed:
            takers = ", ".join(s for s, names in STAGE_SETTINGS.items() if base in names) or "no stage"
            problems.append(f"`--{name}` is not a setting of {prog} (it is one of {takers}): drop it here, or put "
                            "it in the recipe, which every stage reads.")
    if problems:
        raise ConfigError(" ".join(problems) + f" `{prog} --help` lists this stage's settings.")


def print_stage_help(parser: TrlParser, script: str, prog: str, description: str | None) -> None:
    """--help with only the settings this stage honours, grouped by what they configure."""
    shown = argparse.ArgumentParser(prog=prog, description=description, add_help=False,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    shown.add_argument("-h", "--help", action="store_true", help="show this message and exit")
    shown.add_argument("--config", help="YAML recipe; every key can be overridden by its flag (recipes/)")
    actions: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        actions.setdefault(action.dest, []).append(action)
    for cls in SCHEMA:
        names = [f.name for f in dataclasses.fields(cls) if f.init and f.name in STAGE_SETTINGS[script]]
        if names:
            group = shown.add_argument_group(GROUP_TITLES.get(cls.__name__, cls.__name__))
            for name in names:
                for action in actions.get(name, []):
                    group._add_action(action)
    shown.print_help()


GROUP_TITLES = {"DataArguments": "data", "EvalArguments": "evaluation, summarizing and merging",
                "Decoding": "decoding", "TrainArguments": "training (TRL's SFTConfig and the project's)",
                "ModelConfig": "model (TRL's ModelConfig)"}


def parse_args(argv: list[str] | None = None, script: str | None = None, prog: str | None = None,
               description: str | None = None) -> tuple[DataArguments, EvalArguments, TrainArguments, ModelConfig]:
    """Parse `--config recipe.yaml` plus CLI overrides into the dataclasses; unknown keys are fatal. The decoding
    settings come back as `eval_args.decoding`.

    `script` names the entry point parsing (STAGE_SETTINGS): it takes only its own flags on the command line, its
    --help lists only those, and it needs a model. `prog` is how the user called it (`python evaluate.py`, `sumtune
    eval`), for messages. Without `script` (library callers, tests) every setting is taken. Only train.py (and a
    caller that names none) keeps the Trainer's own parse-time check that bf16 runs on this machine: the other stages
    train nothing, so a bf16 recipe prepares data, merges or scores anywhere.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    name = script or "train.py"
    prog = prog or f"python {name}"
    parser = TrlParser(SCHEMA)
    parser.error = _argparse_error(prog)  # one `error:` line instead of argparse's usage dump
    if script is not None and ("-h" in argv or "--help" in argv):
        print_stage_help(parser, script, prog, description)
        sys.exit(0)
    if script is not None:
        _check_stage_flags(argv, script, prog)
    defaults = {action.dest: action.default for action in parser._actions}
    # TRL defaults to bf16=True, which fails on CPUs and T4s before any recipe is read; precision is the recipe's
    # choice, so the project default is full precision and every GPU recipe sets fp16 or bf16 explicitly.
    parser.set_defaults_with_config(bf16=False)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv) or not Path(argv[index + 1]).is_file():
            path = argv[index + 1] if index + 1 < len(argv) else "(none)"
            raise ConfigError(f"Recipe file not found: {path}. Pass an existing YAML file to --config.")
        parser.set_defaults_with_config(**_read_recipe(parser, argv[index + 1], prog))
        del argv[index:index + 2]
    # Ranges are checked on the values as given, before the dataclasses' own __post_init__ checks (which raise the
    # libraries' messages, or none) and before anything is built from them.
    given, _ = parser.parse_known_args(argv)
    _check_ranges(vars(given), defaults, prog)
    data_args, eval_args, decoding, training_args, model_args = _parse_or_explain(parser, argv, name, prog)
    eval_args.decoding = decoding
    _check(data_args, eval_args, training_args, model_args)
    if script is not None:
        require_model(eval_args, model_args, script)
    if not torch.cuda.is_available():
        # Pinned host memory only speeds copies to a GPU; without one torch warns on every DataLoader.
        training_args.dataloader_pin_memory = False
    return data_args, eval_args, training_args, model_args


def _parse_or_explain(parser: TrlParser, argv: list[str], name: str, prog: str):
    """`_parse`, with the libraries' ValueErrors as one ConfigError naming the fix."""
    try:
        return _parse(parser, argv, training=name == "train.py")
    except ValueError as err:
        message = str(err)
        if "doesn't support bf16" in message:
            raise ConfigError(f"bf16 is set but this machine has no GPU with bf16 support. On a T4 use {T4_RECIPE} "
                              f"(fp16); on a CPU set `bf16: false` (see {CPU_RECIPE}).") from None
        if message.startswith("Some specified arguments are not used"):
            flags = message.split(": ", 1)[1]
            raise ConfigError(f"Unknown command-line argument(s) {flags}: fix the spelling; `{prog} --help` "
                              "lists every option.") from None
        raise ConfigError(message) from None


def _parse(parser: TrlParser, argv: list[str], training: bool):
    """TrlParser's parse. A stage that trains nothing passes the Trainer's bf16 hardware check by parsing in full
    precision, then gets the recipe's bf16 settings back on the parsed arguments (its manifest records them)."""
    with warnings.catch_warnings():
        # TRL's documented `gradient_checkpointing` (TRL sets its default) is mirrored to `activation_checkpointing`
        # by transformers, which warns about the old name on every parse.
        warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
        try:
            return parser.parse_args_and_config(argv)
        except ValueError as err:
            if training or "doesn't support bf16" not in str(err):
                raise
        asked, _ = parser.parse_known_args(argv)
        parsed = parser.parse_args_and_config([*argv, "--bf16", "false", "--bf16_full_eval", "false"])
    parsed[3].bf16, parsed[3].bf16_full_eval = asked.bf16, asked.bf16_full_eval
    return parsed


def config_summary(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig) -> str:
    """The settings a person checks at the start of a run, on one line (the full config is saved with the run)."""
    quantized = "4-bit" if model_args.load_in_4bit else "8-bit" if model_args.load_in_8bit else model_args.dtype
    adapter = f", LoRA r={model_args.lora_r}" if model_args.use_peft else ", full fine-tune"
    length = (f"{training_args.max_steps} steps" if training_args.max_steps > 0
              else f"{training_args.num_train_epochs:g} epochs")
    per_device = f"{training_args.per_device_train_batch_size} per device"
    batch = (f"{training_args.global_batch_size} ({per_device})" if training_args.global_batch_size
             else f"{per_device} x {training_args.gradient_accumulation_steps} accumulation")
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "full precision"
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    return (f"model {model_args.model_name_or_path} ({quantized}{adapter}) | data {data_args.dataset_name} | "
            f"{length} | lr {training_args.learning_rate:g} {scheduler} | batch {batch} | "
            f"{precision} | output {training_args.output_dir}")
