"""Preflight: checks that run before any model is loaded, so a wrong setting costs seconds, not a model load.

Each raises ConfigError naming the problem and the fix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from trl import ModelConfig, SFTConfig

from .config import CPU_RECIPE, T4_RECIPE, ConfigError
from .stage import is_unfinished

RECIPE_FOR_PRECISION = {"bf16": "recipes/phi-2/qlora.yaml", "fp16": T4_RECIPE, "no": CPU_RECIPE, "fp8": "none yet"}
# Checkpoints (adapter + optimizer state) and the adapter stay far below this; a disk with less is nearly full.
MIN_FREE_BYTES = 512 * 2**20
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")



def fsdp_enabled() -> bool:
    """True under `accelerate launch` with an FSDP config (accelerate exports this variable to every process)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")

def check_precision(training_args: SFTConfig, model_args: ModelConfig, training: bool) -> None:
    """The precision the recipe asks for must run on this machine (bf16 on a T4 is the classic mistake)."""
    cuda = torch.cuda.is_available()
    if cuda and not torch.cuda.is_bf16_supported() and ((training and training_args.bf16)
                                                        or model_args.dtype == "bfloat16"):
        raise ConfigError(f"bf16 is requested (`bf16: true` or `dtype: bfloat16`) but {torch.cuda.get_device_name(0)} "
                          f"has no bf16 support: use {T4_RECIPE} (fp16, `dtype: float16`).")
    if training and not cuda and (training_args.fp16 or training_args.bf16):
        flag = "fp16" if training_args.fp16 else "bf16"
        raise ConfigError(f"`{flag}: true` (mixed precision) needs a CUDA GPU and none is visible: on a CPU set "
                          f"`{flag}: false` and `dtype: float32` (see {CPU_RECIPE}).")
    if training:
        check_launcher_precision(training_args)
        check_fsdp(model_args)
        check_compile(training_args)


def check_compile(training_args: SFTConfig) -> None:
    """`compile_decoder_layers` needs one compiled graph shared by all layers, and no second compile around it."""
    if not getattr(training_args, "compile_decoder_layers", False):
        return
    if tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2]) < (2, 5):
        raise ConfigError(f"`compile_decoder_layers` needs torch >= 2.5 (found {torch.__version__}): older versions "
                          "compile each layer separately and fall back to eager. Upgrade torch or set it to false.")
    if training_args.torch_compile:
        raise ConfigError("`compile_decoder_layers` and `torch_compile` both compile the model: keep one.")
    if fsdp_enabled():
        raise ConfigError("`compile_decoder_layers` is not supported under FSDP (not tried): set it to false, or use a "
                          "DDP accelerate config.")


def check_launcher_precision(training_args: SFTConfig) -> None:
    """`accelerate launch` exports its config's mixed_precision; the Trainer lets the recipe's fp16/bf16 win, or the
    launcher's when the recipe sets neither (a full-precision recipe would silently train in bf16), so both must agree.
    """
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched is None:  # plain `python train.py`: the recipe alone decides
        return
    recipe = "fp16" if training_args.fp16 else "bf16" if training_args.bf16 else "no"
    if launched != recipe:
        asks = f"`{recipe}: true`" if recipe != "no" else "full precision (neither `fp16` nor `bf16`)"
        raise ConfigError(f"The accelerate config has `mixed_precision: {launched}` but the recipe asks for {asks}. "
                          f"Change `mixed_precision` in the --config_file given to accelerate launch to {recipe!r} "
                          f"(or pass `accelerate launch --mixed_precision {recipe}`), or use a recipe made for "
                          f"{launched} such as {RECIPE_FOR_PRECISION[launched]}.")


def check_fsdp(model_args: ModelConfig) -> None:
    """FSDP flattens and shards float tensors only: 4-bit weights must be packed in the compute dtype."""
    if not fsdp_enabled():
        return
    if model_args.load_in_8bit:
        raise ConfigError("FSDP cannot shard an 8-bit base: use `load_in_4bit: true` (see "
                          "recipes/phi-2/qlora-fsdp.yaml) or a DDP accelerate config.")
    if model_args.load_in_4bit and model_args.bnb_4bit_quant_storage != model_args.dtype:
        raise ConfigError(f"FSDP with a 4-bit base needs `bnb_4bit_quant_storage: {model_args.dtype}` (the same "
                          f"as `dtype`), got {model_args.bnb_4bit_quant_storage!r}: see recipes/phi-2/qlora-fsdp.yaml.")


def check_free_disk(path: str | Path, needed: int = MIN_FREE_BYTES, what: str = "checkpoints") -> None:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < needed:
        raise ConfigError(f"Only {free / 2**30:.2f} GiB free under {path}; {what} need at least "
                          f"{needed / 2**30:.2f} GiB: free some space or pass another --output_dir.")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


def check_model_source(name: str, flag: str = "--model_name_or_path", weights: bool = True) -> None:
    """A complete local model folder (config + safetensors) or a well-formed hub id (cached, when offline)."""
    path = Path(name)
    if path.exists():
        if is_unfinished(path):
            raise ConfigError(f"{name} is an unfinished output (a `.tmp` folder): re-run the stage that writes it.")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ConfigError(f"{flag} {name} is not a complete model folder (no config.json): pass the folder "
                              "written by merge.py or a hub id.")
        if weights:
            index = path / "model.safetensors.index.json"
            shards = (set(json.loads(index.read_text()).get("weight_map", {}).values()) if index.is_file()
                      else {p.name for p in path.glob("*.safetensors")})
            missing = [s for s in shards if not (path / s).is_file()]
            if not shards or missing:
                raise ConfigError(f"{flag} {name} has no complete safetensors weights (missing: "
                                  f"{missing or '*.safetensors'}): only safetensors are loaded; re-run merge.py or "
                                  "convert the checkpoint.")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not HUB_ID.match(name):
        raise ConfigError(f"{flag} {name} does not exist: pass an existing local model folder or a hub id "
                          "such as microsoft/phi-2.")
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise ConfigError(f"{flag} {name} is neither a local folder nor in the Hugging Face cache, and "
                              "HF_HUB_OFFLINE is set: download it once online or pass a local folder.")


def same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()


def check_adapter(adapter_path: str | None, base: str) -> None:
    """A complete adapter folder (config + safetensors) trained on the base model given."""
    if not adapter_path:
        raise ConfigError("No adapter given: pass --adapter_path OUTPUT_DIR/adapter (written by train.py).")
    path = Path(adapter_path)
    if is_unfinished(path):
        raise ConfigError(f"{adapter_path} is an unfinished adapter (a `.tmp` folder): re-run train.py, which "
                          "resumes from its last checkpoint.")
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"No adapter at {adapter_path!r} (no adapter_config.json): pass --adapter_path "
                          "OUTPUT_DIR/adapter (written by train.py).")
    if not (path / "adapter_model.safetensors").is_file():
        raise ConfigError(f"The adapter at {adapter_path} has no adapter_model.safetensors: only safetensors "
                          "are loaded; re-run train.py or re-save the adapter with safe_serialization=True.")
    try:
        adapter_base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path / 'adapter_config.json'} is not valid JSON: re-run train.py.") from None
    if adapter_base and not same_model(adapter_base, base):
        raise ConfigError(f"The adapter at {adapter_path} was trained on {adapter_base!r}, not {base!r}: pass "
                          f"--model_name_or_path {adapter_base}.")


def check_process_group(joined: int, consequence: str, script: str) -> None:
    """Processes started by `accelerate launch` must form one group; on a CPU they only do with `--use_cpu true`."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and joined != launched:
        raise ConfigError(f"{launched} processes were launched but they did not join one process group (each would "
                          f"{consequence}): on a machine without GPUs add `--use_cpu true` to the {script} arguments "
                          "(accelerate's multi-process launcher does not pass `use_cpu` on).")


def _named_modules_on_meta(model_args: ModelConfig) -> tuple[str, dict[str, torch.nn.Module]]:
    """The model's class name and every module by full name, built from its config alone (no weights read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                        trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return type(model).__name__, dict(model.named_modules(remove_duplicate=False))


def check_lora_targets(model_args: ModelConfig) -> None:
    """Every `lora_target_modules` and `lora_modules_to_save` entry must name modules the model has.

    PEFT stops with a traceback only after the model has loaded when no entry matches, and silently adapts the
    matching few when only some do. Matching follows PEFT: a list entry matches a module whose full name equals it
    or ends with `.entry`; a single string (TRL turns a one-element list into one) is a regex over full names;
    modules to save match by name suffix.
    """
    targets, to_save = model_args.lora_target_modules, model_args.lora_modules_to_save
    if not model_args.use_peft or (not targets and not to_save):
        return
    if isinstance(targets, str) and targets.lower() == "all-linear":
        targets = None
    if not targets and not to_save:
        return
    from transformers.pytorch_utils import Conv1D  # GPT-2-style linear layer

    arch, modules = _named_modules_on_meta(model_args)
    # The layer types PEFT's LoRA can wrap in an unquantized model; a name matching only others (a norm, a whole
    # block) fails inside PEFT as well.
    adaptable = {name for name, m in modules.items() if isinstance(m, (
        torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
        torch.nn.MultiheadAttention, Conv1D))}
    linear = {name for name, m in modules.items() if isinstance(m, (torch.nn.Linear, Conv1D))}
    short = sorted({name.rsplit(".", 1)[-1] for name in linear} - {"lm_head"})
    have = f"Its linear layers: {', '.join(short)}" + (" (and the output layer lm_head)" if "lm_head" in linear
                                                          else "")
    model = f"{model_args.model_name_or_path} ({arch})"
    problems, keys = [], []
    if isinstance(targets, str):
        try:
            found = any(re.fullmatch(targets, name) for name in adaptable)
        except re.error as e:
            raise ConfigError(f"`lora_target_modules` {targets!r} is not a valid regular expression ({e}): list "
                              "module names instead, e.g. [q_proj, v_proj].") from None
        if not found:
            # the module the user probably meant, else the first linear layer
            example = next((n for n in modules if n in linear and n.endswith(f".{targets}")),
                           next((n for n in modules if n in linear and n != "lm_head"), ""))
            problems.append(f"LoRA target pattern {targets!r} matches no layer of {model}: a single "
                            f"`lora_target_modules` entry is a regular expression over full module names such as "
                            f"{example} (list two or more names, or write '.*\\.{example.rsplit('.', 1)[-1]}').")
    elif targets:
        missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in adaptable)]
        if missing:
            problems.append(f"LoRA target module(s) {missing} match no layer of {model}.")
    if problems:
        keys.append("`lora_target_modules`")
    unsaved = [m for m in to_save or [] if not any(n.endswith(m) for n in modules if n)]
    if unsaved:
        embeddings = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, torch.nn.Embedding)})
        problems.append(f"`lora_modules_to_save` {unsaved} match no module of {model} (its embeddings: "
                        f"{', '.join(embeddings) or 'none'}).")
        keys.append("`lora_modules_to_save`")
    if problems:
        raise ConfigError(f"{' '.join(problems)} {have}. Fix {' and '.join(keys)} in the recipe or on the command "
                          "line.")
