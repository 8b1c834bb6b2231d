"""Tokenizer, 4-bit base model and LoRA settings: the precision decisions live here."""

from __future__ import annotations

import functools
import logging
import types

import torch
import torch.nn.functional as F
from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, get_quantization_config

from . import patches
from .config import ConfigError
from .preflight import fsdp_enabled
from .prompts import build_messages, load_chat_template, render_prompt

logger = logging.getLogger(__name__)


# Phi-2's gelu_new is the tanh GELU written out in Python ops; PyTorch's fused kernel computes the same formula with
# half the activation memory and +13% training speed (docs/performance.md).
FUSED_ACTIVATIONS = {"gelu_new": "gelu_pytorch_tanh"}


def resolve_dtype(name: str | None) -> torch.dtype | str:
    if name in (None, "auto"):
        return "auto"
    if not hasattr(torch, name) or not isinstance(getattr(torch, name), torch.dtype):
        raise ConfigError(f"Unknown dtype {name!r}: use float16, bfloat16, float32 or auto.")
    return getattr(torch, name)


def starts_with_bos(tokenizer) -> bool:
    """Whether the tokenizer puts BOS before a text when asked for its special tokens (its model's convention)."""
    if tokenizer.bos_token_id is None:
        return False
    return tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]


def load_tokenizer(name_or_path: str, chat_template_path: str | None, padding_side: str = "right",
                   revision: str | None = None):
    """A tokenizer with our chat template (preceded by BOS where the tokenizer starts texts with it); pad falls back to
    EOS (Phi-2 defines no pad token)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except OSError as err:
        raise ConfigError(f"Could not load a tokenizer from {name_or_path!r} ({err}). "
                          "Pass a local model folder or a hub id reachable from this machine.") from None
    tokenizer.chat_template = load_chat_template(chat_template_path)
    if starts_with_bos(tokenizer) and not render_prompt(tokenizer, build_messages("a", "a")["prompt"]).startswith(
            tokenizer.bos_token):
        # A tokenizer that begins every text with BOS (Gemma, Llama, Mistral) belongs to a model pretrained that way,
        # and such a model reads text without it far worse (Gemma 3 270M predicts the summaries of 6 real XSum rows
        # at 2.20 nats a token with BOS, 2.80 without: tests/test_real_weights.py). TRL and the generator tokenize the
        # rendered chat without special tokens (so that templates that emit BOS do not get two), so BOS has to come
        # from the template. The template saved beside the adapter and the merged model, and hashed into their
        # manifests, is this one.
        tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    if tokenizer.eos_token is None:
        raise ConfigError(f"The tokenizer of {name_or_path} has no EOS token; the summaries need one to end.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def model_init_kwargs(model_args: ModelConfig, quantize: bool = True) -> dict:
    """Keyword arguments for `from_pretrained`: dtype, attention, and 4-bit NF4 when the recipe asks for it."""
    kwargs = {
        "revision": model_args.model_revision,
        "dtype": resolve_dtype(model_args.dtype),
        "trust_remote_code": False,
        "use_safetensors": True,
    }
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if quantize and (model_args.load_in_4bit or model_args.load_in_8bit):
        kwargs["quantization_config"] = get_quantization_config(model_args)
        # DDP: quantized weights are placed at load time, one whole copy per process on that process's GPU.
        # FSDP: no device_map of ours; transformers' bitsandbytes quantizer then puts the 4-bit model on the current
        # GPU (about 1.7 GB for Phi-2) and FSDP shards it from there (100 steps on 2 x H200, 2026-11-27).
        if torch.cuda.is_available() and not fsdp_enabled():
            kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def load_model(model_args: ModelConfig, quantize: bool = True, device: str | None = None):
    """The base model, in 4-bit if the recipe says so and `quantize`, else in the recipe's 16/32-bit dtype."""
    kwargs = model_init_kwargs(model_args, quantize)
    if device is not None and "device_map" not in kwargs:
        kwargs["device_map"] = device
    try:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                            trust_remote_code=False)
        if getattr(config, "hidden_act", None) in FUSED_ACTIVATIONS and patches.enabled("fused_gelu"):
            kwargs["hidden_act"] = FUSED_ACTIVATIONS[config.hidden_act]
        return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    except OSError as err:
        raise ConfigError(f"Could not load model {model_args.model_name_or_path!r} ({err}). Pass a local model "
                          "folder with safetensors weights or a reachable hub id.") from None


def upcast_trainable_params(model) -> int:
    """Keep trainable (adapter) weights in fp32.

    TRL casts QLoRA adapter weights to bf16 after wrapping the model; under fp16 mixed precision the grad scaler then
    fails with `_amp_foreach_non_finite_check_and_unscale_cuda not implemented for 'BFloat16'`, bf16 master
    weights lose small updates, and PEFT reloads a checkpoint's adapter in fp32, so a resumed run would switch
    precision halfway. fp32 adapters cost a few MB for r=16 on Phi-2. Returns the number of tensors cast.
    """
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def keep_4bit_weights_trainable_on_cpu(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, a `Linear4bit` run in eval mode without gradients (evaluation, ROUGE generation)
    repacks its weight in place for a faster gemv, and the training forward that follows then fails
    (`a view of a leaf Variable that requires grad is being used in an in-place operation`, bitsandbytes 0.50).
    GPUs never repack. Returns the number of layers changed.
    """
    layers = [module for module in model.modules() if getattr(module, "support_avx512bf16_for_cpu", False)]
    if not layers or not patches.enabled("bnb_cpu_packing"):
        return 0
    for module in layers:
        module.support_avx512bf16_for_cpu = False
    return len(layers)


def layer_norm_in_input_dtype(model) -> int:
    """Run every LayerNorm in its input's dtype under autocast, instead of autocast's fp32. Returns the count.

    CUDA autocast runs `layer_norm` in fp32 and returns fp32. In Phi-2 one LayerNorm feeds attention and MLP, and
    bitsandbytes' Linear4bit returns its input's dtype, so q/k/v/fc1 outputs, GELU, fc2 and the residual stream all
    became fp32: two conversion copies around every 4-bit layer and every elementwise op in fp32 (a quarter of the GPU
    time in a profile of the bf16 recipe; docs/performance.md). The LayerNorm kernel accumulates its
    statistics in fp32 for bf16 input, so only the output's rounding changes, to the bf16 a plain bf16 model uses.
    For bf16 only: under fp16 (T4) Phi-2's activations can overflow, and there autocast's fp32 is kept. The weights are
    frozen; no library offers this switch, hence the per-instance forward.
    """
    norms = [module for module in model.modules() if isinstance(module, torch.nn.LayerNorm)]
    if not norms or not patches.enabled("layer_norm_in_input_dtype"):
        return 0
    for module in norms:
        module.forward = types.MethodType(_layer_norm_without_autocast, module)
    return len(norms)


def checkpoint_every_n_layers(model, n: int, uncheckpointed: int = 0) -> tuple[int, int]:
    """Keep gradient checkpointing on every n-th decoder layer only (index % n == 0), and on none of the last
    `uncheckpointed` layers; returns (checkpointed, layers).

    Checkpointing trades a recomputed forward for activation memory, all or nothing per model in transformers 5.17 (the
    device's version; `every_n_layers` arrived later): with a frozen 4-bit base the recompute is a third of the step's
    compute, so sparing half the layers from it buys speed with the memory an 80 GB card has spare. Call after the
    Trainer has turned checkpointing on (it does so again at the start of `train`). `uncheckpointed` sets the memory
    spent more finely than `n`: every layer spared holds its activations (which layers does not change the peak, which
    comes at the end of the forward, when all of them are held).
    """
    from transformers.modeling_layers import GradientCheckpointingLayer  # the decoder layers checkpointing wraps

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if uncheckpointed > len(layers):
        raise ConfigError(f"`uncheckpointed_layers` ({uncheckpointed}) is more than the model's {len(layers)} decoder "
                          f"layers: set it to at most {len(layers)} (or turn gradient_checkpointing off).")
    if not patches.enabled("partial_checkpointing"):
        return sum(layer.gradient_checkpointing for layer in layers), len(layers)
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = (layer.gradient_checkpointing and index % n == 0
                                        and index < len(layers) - uncheckpointed)
    return sum(layer.gradient_checkpointing for layer in layers), len(layers)


def causal_attention_for_right_padded_training(model) -> int:
    """In training mode, drop the padding mask of right-padded batches so attention runs causal-only. Returns the count.

    TRL's training collator pads on the right, so under a causal mask no real token can see a pad: the mask changes
    only the pads' own outputs, whose labels are -100, and positions count from 0 either way. Without it SDPA gets
    `is_causal` and no mask tensor, which lets it use its flash kernel; with a mask it builds a 4-D mask each forward
    and (PyTorch 2.11 on an H200) picks cuDNN attention, which plans anew for each sequence length on the CPU
    (~2.1 ms a call in bench/results/profile_train_bs16_nogc_2026-11-27.txt). Eval mode keeps the mask: generation
    pads on the left. No library offers this switch, hence a forward pre-hook on each decoder stack (the module
    whose forward takes the mask and holds `layers`); batches without a 2-D mask (padding-free) pass unchanged.
    """
    from transformers import PreTrainedModel

    if not patches.enabled("causal_only_training_attention"):
        return 0
    stacks = [m for m in model.modules() if isinstance(m, PreTrainedModel) and isinstance(getattr(m, "layers", None),
                                                                                           torch.nn.ModuleList)]
    for stack in stacks:
        stack.register_forward_pre_hook(_drop_right_padding_mask, with_kwargs=True)
    return len(stacks)


def dequantize_4bit_linears(model) -> int:
    """Replace every bitsandbytes Linear4bit (also a PEFT LoRA layer's base) by a torch Linear holding its weight
    dequantized once, in the model's dtype (the recipes' 4-bit compute dtype). Returns the count. For generation only.

    For any input of more than one token bitsandbytes dequantizes the whole weight in every forward, then runs a
    plain matmul (`MatMul4Bit`): generation with an adapter on the 4-bit base repeats that for every layer at every
    decoding step. Doing it once computes with the same weight values for ~2 bytes a parameter instead of ~0.5
    (Phi-2: ~5.2 GB instead of ~1.7 GB); the adapter stays unmerged. transformers' `dequantize()` does the
    replacement; here it is applied under PEFT's wrapper.
    """
    import bitsandbytes as bnb

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        # On a CPU with AVX512-BF16 bitsandbytes repacks a 4-bit weight for its own kernel at the first eval forward
        # (and marks the quant state `packing_format_for_cpu`); `dequantize()` reads the packed layout as if it were
        # the plain one and returns garbage (SmolLM2-135M after one forward: max |weight error| 5.8). bitsandbytes
        # undoes the packing itself before moving or saving a weight, with this function.
        if getattr(layer.weight.quant_state, "packing_format_for_cpu", False):
            if not patches.enabled("bnb_cpu_packing"):
                raise ConfigError("A 4-bit weight was repacked for bitsandbytes' CPU kernel by an earlier forward, and "
                                  "this bitsandbytes version was not checked for undoing that: dequantize a freshly "
                                  f"loaded model, or set {patches.FORCE_ENV}=bnb_cpu_packing.")
            from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

            layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                layer.weight.data, layer.weight.quant_state)
    if layers:
        base.dequantize()
    return len(layers)


def merge_adapter_weights(model, required: bool = False):
    """Add each LoRA layer's update to its base weight in memory and return the plain model (no LoRA layers left).

    For generation: every LoRA layer otherwise runs ~4 extra kernels per forward (A, B, scale, add), which dominate
    one-token decoding steps. The sum is taken in float32 and rounded to the weight's dtype once, as merge.py does on
    disk. PEFT's `merge_and_unload` cannot do it after `dequantize_4bit_linears`: its bitsandbytes LoRA layer would
    dequantize the (now plain) weight again and requantize the sum. So PEFT computes each update
    (`get_delta_weight`) and removes its layers (`unload`); only the addition is done here. Outside the PEFT versions
    it was checked on (patches: lora_merge_in_memory) the model comes back unmerged, or, `required`, is refused."""
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    if not patches.enabled("lora_merge_in_memory"):
        if required:
            raise ConfigError("Merging into the dequantized 4-bit weights relies on PEFT internals checked on peft "
                              f"{patches.PATCHES['lora_merge_in_memory'].versions['peft']} (the warning above says "
                              "what differs): merge with --merge_base original, or set "
                              f"{patches.FORCE_ENV}=lora_merge_in_memory and check the merged model's parity in its "
                              "manifest.")
        return model  # the stock path: generation through the LoRA layers (the warning names why)
    count = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        weight = module.get_base_layer().weight
        if isinstance(module.get_base_layer(), bnb.nn.Linear4bit) or not weight.dtype.is_floating_point:
            raise ConfigError("--merge_adapter needs 16/32-bit base weights: with a 4-bit base add "
                              "--dequantize_4bit_base true; an 8-bit base cannot be merged in memory (use merge.py).")
        if any(module.use_dora.get(name) or getattr(module, "lora_bias", {}).get(name)
               for name in module.active_adapters):
            # B·A alone would drop DoRA's magnitude vector and the LoRA bias
            raise ConfigError("--merge_adapter supports plain LoRA adapters; this one uses DoRA or a LoRA bias: drop "
                              "--merge_adapter (or merge it with merge.py).")
        delta = sum(module.get_delta_weight(name).float() for name in module.active_adapters)
        weight.data = (weight.data.float() + delta).to(weight.dtype)
        count += 1
    if not count:
        raise ConfigError("--merge_adapter: the model has no LoRA layer to merge")
    return model.unload()


def compile_decoder_layers_for_training(model) -> int:
    """torch.compile the forward of every decoder layer, used in training mode only. Returns the count.

    One compiled graph serves all layers (PyTorch >= 2.5 treats module parameters as graph inputs); it is compiled
    for the first batch's shapes and once more, with a dynamic sequence length, when the first new length arrives
    (tens of seconds on an H200; length-grouped batches can keep one length for many steps, so that may be late).
    Eval mode (the Trainer's evaluation, ROUGE generation with its growing KV cache) keeps the eager forward, so
    new decoding shapes never trigger compiles.
    Not Trainer's `torch_compile` (the whole model, eval included) nor accelerate's `compile_regions` (it wraps the
    layers in OptimizedModule, which hides them from transformers' gradient-checkpointing switch). Gradient
    checkpointing stays outside or inside the compiled region, as the transformers version puts it.
    bitsandbytes' Linear4bit casts a bias of another dtype in place (`bias.data = ...`) on its first call, which
    dynamo cannot trace; the frozen biases are given their layer's compute dtype here, which is what that cast does.
    """
    import bitsandbytes as bnb
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not patches.enabled("compiled_decoder_layers"):
        return 0
    for module in model.modules():
        if (isinstance(module, bnb.nn.Linear4bit) and module.bias is not None and not module.bias.requires_grad
                and module.compute_dtype is not None):
            module.bias.data = module.bias.data.to(module.compute_dtype)
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        eager = layer.forward
        layer.forward = functools.partial(_forward_compiled_in_training, layer, eager, torch.compile(eager))
    return len(layers)


def _forward_compiled_in_training(layer, eager, compiled, *args, **kwargs):
    return (compiled if layer.training else eager)(*args, **kwargs)


def _drop_right_padding_mask(module, args, kwargs):
    mask = kwargs.get("attention_mask")
    if module.training and mask is not None and mask.dim() == 2:
        kwargs["attention_mask"] = None
    return args, kwargs


def _layer_norm_without_autocast(self, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):
        weight = None if self.weight is None else self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)
