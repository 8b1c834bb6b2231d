"""Every place where sumtune replaces or relies on a library's internals, with the versions it was checked on.

Each fast path or workaround below copies upstream code, writes a private attribute, calls a private function or
overrides a private method. It was checked against the stock path (bitwise or to the tests' tolerance) on the
versions in `versions`, and `fingerprints` records the upstream code it copies or relies on as it was then: a hash of
that code's text (docstrings, comment lines and blank lines left out), one per checked version where it differed.

Every patch site asks `enabled(name)` first. Outside the checked versions, or when the installed upstream code no
longer has a recorded fingerprint, the site runs the library's stock path and one warning (once per process) names
the patch and how to force it: `SUMTUNE_FORCE_PATCHES=<name>[,<name>...]` (or `all`). tests/test_patches.py fails
when an installed library's code differs from every recorded fingerprint: check the patch against the new code (its
site's tests compare it with the stock path), then add the new fingerprint and widen `versions`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import logging
import os
import textwrap
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .errors import ConfigError

logger = logging.getLogger(__name__)

FORCE_ENV = "SUMTUNE_FORCE_PATCHES"


@dataclass(frozen=True)
class Patch:
    """`upstream`: "module:Qualified.name" of each object copied or relied on; `versions`: the distributions involved,
    each with the range it was checked on; `site`: where sumtune applies it and what the stock path is."""

    name: str
    versions: dict[str, str]
    upstream: tuple[str, ...]
    fingerprints: frozenset[str]
    site: str


# The attention classes whose forward hands generation.decode_attention_forward everything it must know (rotary
# applied, the SlotCache's keys, `scaling`, for sliding layers `sliding_window`): the one list, with their modules.
DECODE_ATTENTION_CLASSES = {"PhiAttention": "phi.modeling_phi", "LlamaAttention": "llama.modeling_llama",
                            "MistralAttention": "mistral.modeling_mistral", "Qwen2Attention": "qwen2.modeling_qwen2",
                            "Qwen3Attention": "qwen3.modeling_qwen3", "Gemma3Attention": "gemma3.modeling_gemma3"}
_ATTENTION_FORWARDS = tuple(f"transformers.models.{module}:{cls}.forward"
                            for cls, module in DECODE_ATTENTION_CLASSES.items())

# Checked on: transformers 5.17.0 (GPU image) and 5.23.0 (requirements/lock.txt); TRL 1.16.0; bitsandbytes 0.50.2;
# peft 0.21.0 (GPU image) and 0.21.2;
# torch 2.11.0 (GPU image) and 2.13.0 (CPU). A range runs from the oldest to the newest version checked; versions
# between them pass only where the upstream code hashes to a recorded fingerprint.
PATCHES = {patch.name: patch for patch in (
    Patch("phi_rotary", {"transformers": ">=5.17,<5.24"},
          ("transformers.models.phi.modeling_phi:PhiAttention.forward",
           "transformers.models.phi.modeling_phi:apply_rotary_pos_emb",
           "transformers.models.phi.modeling_phi:rotate_half"),
          frozenset({"9f3c1630501888ec"}),
          "generation.fused_rotary: a copy of PhiAttention.forward rotating q and k in place; stock: the class's "
          "forward"),
    Patch("slot_decode_attention", {"transformers": ">=5.17,<5.24"},
          ("transformers.configuration_utils:PreTrainedConfig._attn_implementation", *_ATTENTION_FORWARDS),
          frozenset({"da1888eb2412a9f2"}),
          "generation.greedy_batch: writes config._attn_implementation to run decode_attention_forward, which needs "
          "what these attention forwards hand it; stock: the model's own attention with a mask per layer type"),
    Patch("fused_gelu", {"transformers": ">=5.17,<5.24"},
          ("transformers.activations:NewGELUActivation", "transformers.activations:GELUTanh"),
          frozenset({"d6075af7b392ae86"}),
          "modeling.load_model: hidden_act gelu_new loaded as gelu_pytorch_tanh (the same formula, one kernel); "
          "stock: gelu_new"),
    Patch("layer_norm_in_input_dtype", {"torch": ">=2.11,<2.14"},
          ("torch.nn.modules.normalization:LayerNorm.forward",),
          frozenset({"e34493655ba6c062"}),
          "modeling.layer_norm_in_input_dtype: a per-instance LayerNorm forward with autocast off (bf16 recipes); "
          "stock: autocast's fp32 LayerNorm"),
    Patch("bnb_cpu_packing", {"bitsandbytes": ">=0.50.2,<0.51"},
          ("bitsandbytes.nn.modules:Linear4bit.forward", "bitsandbytes.nn.modules:_convert_weight_packed_for_cpu",
           "bitsandbytes.nn.modules:_convert_weight_packed_for_cpu_inverse"),
          frozenset({"5074fadc5a0db754"}),
          "modeling.keep_4bit_weights_trainable_on_cpu clears Linear4bit.support_avx512bf16_for_cpu; "
          "modeling.dequantize_4bit_linears undoes a CPU-packed weight with a private function; stock: bitsandbytes "
          "repacks (training after an evaluation fails on such CPUs) and a packed weight cannot be dequantized"),
    Patch("partial_checkpointing", {"transformers": ">=5.17,<5.24"},
          ("transformers.modeling_layers:GradientCheckpointingLayer",),
          frozenset({"6d910e06896d9288", "d82b041de8a28214"}),  # 5.17 checkpoints in __call__, 5.23 in forward
          "modeling.checkpoint_every_n_layers: clears some decoder layers' gradient_checkpointing flag; stock: every "
          "layer checkpointed"),
    Patch("compiled_decoder_layers", {"transformers": ">=5.17,<5.24", "bitsandbytes": ">=0.50.2,<0.51"},
          ("transformers.modeling_layers:GradientCheckpointingLayer", "bitsandbytes.nn.modules:Linear4bit.forward"),
          frozenset({"9614f41f5d15ab8b", "b99974e888969f0a"}),
          "modeling.compile_decoder_layers_for_training: a per-instance compiled forward on each decoder layer, "
          "frozen 4-bit biases cast as Linear4bit.forward would; stock: eager layers"),
    Patch("causal_only_training_attention", {"trl": ">=1.16,<1.17"},
          ("trl.trainer.sft_trainer:DataCollatorForLanguageModeling.torch_call",),
          frozenset({"4f7f0a062dd2df0a"}),
          "modeling.causal_attention_for_right_padded_training: drops the padding mask of TRL's right-padded "
          "training batches; stock: the mask is kept"),
    Patch("slot_cache_greedy", {"transformers": ">=5.17,<5.24"},
          ("transformers.cache_utils:DynamicCache.__init__", "transformers.cache_utils:Cache.get_seq_length",
           "transformers.masking_utils:create_causal_mask",
           "transformers.masking_utils:create_sliding_window_causal_mask"),
          frozenset({"51d789debf7f3661", "5a40462ba361341e"}),  # 5.23, 5.17
          "generation.greedy_batch: its own greedy loop over a SlotCache (a DynamicCache subclass the mask helpers "
          "see as empty at prefill) with prepared 4D masks per layer type (decode_masks); stock: model.generate()"),
    Patch("lora_merge_in_memory", {"peft": ">=0.21,<0.22"},
          ("peft.tuners.lora.layer:Linear.get_delta_weight", "peft.tuners.lora.bnb:Linear4bit.get_delta_weight",
           "peft.tuners.tuners_utils:BaseTuner._unload_and_optionally_merge"),
          frozenset({"e9b5a27388b695cd"}),  # 0.21.0 and 0.21.2 alike
          "modeling.merge_adapter_weights (--merge_adapter): PEFT's per-layer update added to the base weight, then "
          "PEFT's unload; stock: generation through the LoRA layers (slower, the same adapter)"),
    Patch("rank_interleaved_sampler", {"transformers": ">=5.17,<5.24", "trl": ">=1.16,<1.17"},
          ("trl.trainer.sft_trainer:SFTTrainer._get_train_sampler",),
          frozenset({"43c26a625c1c35d3"}),
          "training.GuardedSFTTrainer._get_train_sampler (private) wraps the length-grouped sampler under DDP; "
          "stock: the Trainer's sampler"),
)}


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _resolve(target: str):
    module_name, _, qualname = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part)  # a property itself, not its value; inherited methods through the MRO
    return obj


def _code(source: str) -> str:
    """One definition's source without its docstrings, comment lines and blank lines. Text, not the syntax tree:
    ast.dump's output changes with the Python version (3.12 added fields), the code's text does not."""
    node = ast.parse(source).body[0]
    docstrings = set()
    for inner in ast.walk(node):
        body = getattr(inner, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    return "\n".join(line.rstrip() for number, line in enumerate(source.splitlines(), 1)
                     if number not in docstrings and line.strip() and not line.strip().startswith("#"))


def fingerprint(upstream: tuple[str, ...]) -> str:
    """A hash of the upstream objects' code, without docstrings, comment lines or blank lines (see _code)."""
    digest = hashlib.sha256()
    for target in upstream:
        obj = _resolve(target)
        for part in [obj.fget, obj.fset] if isinstance(obj, property) else [obj]:
            if part is not None:
                digest.update(_code(textwrap.dedent(inspect.getsource(inspect.unwrap(part)))).encode())
    return digest.hexdigest()[:16]


def unchecked(patch: Patch) -> str | None:
    """Why `patch` is outside what was checked (installed version, or upstream code changed); None when inside."""
    for distribution, specifier in patch.versions.items():
        version = installed_version(distribution)
        if version is None:
            return f"{distribution} is not installed"
        if not SpecifierSet(specifier).contains(Version(version), prereleases=True):
            return f"it was checked on {distribution} {specifier} and {version} is installed"
    try:
        found = fingerprint(patch.upstream)
    except (ImportError, AttributeError, OSError, TypeError, SyntaxError) as err:
        return f"the upstream code it relies on is gone ({type(err).__name__}: {err})"
    if found not in patch.fingerprints:
        return f"the upstream code it relies on ({', '.join(patch.upstream)}) has changed (fingerprint {found})"
    return None


def forced() -> set[str]:
    """The patch names in SUMTUNE_FORCE_PATCHES (`all`: every one); an unknown name is an error."""
    names = {name.strip() for name in os.environ.get(FORCE_ENV, "").split(",") if name.strip()}
    if "all" in names:
        return set(PATCHES)
    if unknown := names - set(PATCHES):
        raise ConfigError(f"{FORCE_ENV} names unknown patches {sorted(unknown)}: use `all` or some of "
                          f"{', '.join(PATCHES)}.")
    return names


@functools.cache
def enabled(name: str) -> bool:
    """Whether the patch `name` runs: inside its checked versions and fingerprints, or forced. Logs once per process
    when a patch is skipped or forced outside them."""
    patch = PATCHES[name]
    force = name in forced()
    reason = unchecked(patch)
    if reason is None:
        return True
    if force:
        logger.warning("Applying sumtune's `%s` patch although %s, because %s names it: compare its results with the "
                       "stock path (%s).", name, reason, FORCE_ENV, patch.site)
        return True
    logger.warning("Skipping sumtune's `%s` patch (%s): %s, so the stock path runs (slower or without this fix, same "
                   "model). Set %s=%s to apply it anyway.", name, patch.site, reason, FORCE_ENV, name)
    return False
