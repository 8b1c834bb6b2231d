"""The version fence around sumtune's patches of library internals (sumtune.patches): every patch matches the
installed upstream code, and outside its checked versions each site runs the stock path with one warning unless the
patch is forced."""

import logging
import types

import pytest
import torch
from conftest import ROOT
from transformers import AutoModelForCausalLM

from sumtune import patches
from sumtune.config import ConfigError


@pytest.fixture(autouse=True)
def fresh_fence(monkeypatch):
    """Each test decides anew (and leaves no cached decision to the tests after it)."""
    monkeypatch.delenv(patches.FORCE_ENV, raising=False)
    patches.enabled.cache_clear()
    yield
    patches.enabled.cache_clear()


def newer_libraries(monkeypatch):
    """Every library reports a version past what the patches were checked on."""
    patches.enabled.cache_clear()
    monkeypatch.setattr(patches, "installed_version", lambda distribution: "99.0")


@pytest.mark.parametrize("name", sorted(patches.PATCHES))
def test_each_patch_matches_the_installed_upstream_code(name):
    """Fails when an installed library's code differs from what the patch was checked against: compare the patch with
    the new upstream code (its site's tests run it against the stock path), then record the fingerprint printed here
    and widen the patch's `versions` in sumtune/patches.py."""
    assert patches.unchecked(patches.PATCHES[name]) is None


def _upstream(x):
    return x + 1


def _upstream_changed(x):
    return x + 2


def test_the_fingerprint_sees_code_changes_and_ignores_docstrings_and_comment_lines():
    plain = patches._code("def f(x):\n    return x + 1\n")
    assert patches._code("def f(x):\n    '''Doc,\n    two lines.'''\n\n    # why\n    return x + 1\n") == plain
    assert patches._code("def f(x):\n    return x + 2\n") != plain
    assert patches._code("def f(x):\n    if x:\n        pass\n    return x\n") != patches._code(
        "def f(x):\n    if x:\n        pass\n        return x\n")  # indentation is structure
    assert (patches.fingerprint((f"{__name__}:_upstream",))
            != patches.fingerprint((f"{__name__}:_upstream_changed",)))


def test_the_fingerprint_does_not_depend_on_the_python_version():
    # ast.dump's text differs between Python versions (3.12 added FunctionDef.type_params); the fingerprint hashes
    # source text, so one recorded value holds on every Python the project runs on.
    assert "FunctionDef" not in patches._code("def f(x):\n    return x\n")
    assert patches._code("def f(x):\n    return x\n") == "def f(x):\n    return x"


def _tiny(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")


def _phi_rotary(model_dir):
    from sumtune.generation import fused_rotary

    with fused_rotary(_tiny(model_dir)) as patched:
        return patched


def _slot_decode(model_dir):
    from sumtune.generation import matmul_decode_supported

    return matmul_decode_supported(_tiny(model_dir))


def _fused_gelu(model_dir):
    from trl import ModelConfig

    from sumtune.modeling import load_model

    return load_model(ModelConfig(model_name_or_path=str(model_dir), dtype="float32")).config.hidden_act


def _layer_norm(model_dir):
    from sumtune.modeling import layer_norm_in_input_dtype

    return layer_norm_in_input_dtype(_tiny(model_dir))


def _bnb_cpu_packing(model_dir):
    import bitsandbytes as bnb

    from sumtune.modeling import keep_4bit_weights_trainable_on_cpu

    layer = bnb.nn.Linear4bit(8, 8)
    layer.support_avx512bf16_for_cpu = True  # as bitsandbytes sets it on such CPUs
    keep_4bit_weights_trainable_on_cpu(layer)
    return layer.support_avx512bf16_for_cpu


def _partial_checkpointing(model_dir):
    from sumtune.modeling import checkpoint_every_n_layers

    model = _tiny(model_dir)
    model.gradient_checkpointing_enable()
    return checkpoint_every_n_layers(model, 2)


def _compiled_layers(model_dir):
    from sumtune.modeling import compile_decoder_layers_for_training

    return compile_decoder_layers_for_training(_tiny(model_dir))  # torch.compile compiles at the first call only


def _causal_only(model_dir):
    from sumtune.modeling import causal_attention_for_right_padded_training

    return causal_attention_for_right_padded_training(_tiny(model_dir))


def _rank_interleaved(model_dir):
    from datasets import Dataset

    from sumtune.training import GuardedSFTTrainer

    trainer = object.__new__(GuardedSFTTrainer)  # only what the Trainer's sampler choice reads
    trainer.train_dataset = Dataset.from_dict({"input_ids": [[1] * n for n in (5, 9, 2, 7, 3, 8, 4, 6)]})
    trainer.processing_class = None
    trainer.args = types.SimpleNamespace(
        train_sampling_strategy="group_by_length", length_column_name="length", train_batch_size=2,
        gradient_accumulation_steps=1, per_device_train_batch_size=2, world_size=2)
    return type(trainer._get_train_sampler()).__name__


def _slot_cache_greedy(model_dir):
    from sumtune import generation
    from sumtune.modeling import load_tokenizer

    calls = []
    own_loop = generation.greedy_batch
    generation.greedy_batch = lambda *a, **k: calls.append(1) or own_loop(*a, **k)
    try:
        tokenizer = load_tokenizer(str(model_dir), str(ROOT / "prompts" / "chat_template.jinja"))
        rows = [[{"role": "user", "content": "Roads were flooded."}]]
        dict(generation.iter_token_ids(_tiny(model_dir), tokenizer, rows, max_new_tokens=2, batch_size=1))
    finally:
        generation.greedy_batch = own_loop
    return bool(calls)


def _lora_merge(model_dir):
    from peft import LoraConfig, get_peft_model

    from sumtune.modeling import merge_adapter_weights

    model = get_peft_model(_tiny(model_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    return type(merge_adapter_weights(model)).__name__


# patch name -> (its site, observed; what the patch gives; what the stock path gives)
SITES = {
    "phi_rotary": (_phi_rotary, 2, 0),
    "slot_decode_attention": (_slot_decode, True, False),
    "fused_gelu": (_fused_gelu, "gelu_pytorch_tanh", "gelu_new"),
    "layer_norm_in_input_dtype": (_layer_norm, 3, 0),
    "bnb_cpu_packing": (_bnb_cpu_packing, False, True),
    "partial_checkpointing": (_partial_checkpointing, (1, 2), (2, 2)),
    "compiled_decoder_layers": (_compiled_layers, 2, 0),
    "causal_only_training_attention": (_causal_only, 1, 0),
    "rank_interleaved_sampler": (_rank_interleaved, "RankInterleavedSampler", "LengthGroupedSampler"),
    "slot_cache_greedy": (_slot_cache_greedy, True, False),
    "lora_merge_in_memory": (_lora_merge, "PhiForCausalLM", "PeftModel"),
}


def test_every_patch_has_a_site_test():
    assert set(SITES) == set(patches.PATCHES)


def fence_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == patches.__name__ and r.levelno == logging.WARNING]


@pytest.mark.parametrize("name", sorted(SITES))
def test_outside_the_checked_versions_the_stock_path_runs_with_one_warning_unless_forced(name, tiny_model_dir,
                                                                                        monkeypatch, caplog):
    site, patched, stock = SITES[name]
    assert site(tiny_model_dir) == patched  # the installed versions are the checked ones

    newer_libraries(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=patches.__name__):
        assert site(tiny_model_dir) == stock
        assert site(tiny_model_dir) == stock
    [warning] = fence_warnings(caplog)  # once per process, however often the site runs
    assert f"`{name}`" in warning and "99.0 is installed" in warning and f"{patches.FORCE_ENV}={name}" in warning

    patches.enabled.cache_clear()
    monkeypatch.setenv(patches.FORCE_ENV, f"layer_norm_in_input_dtype,{name}")
    assert site(tiny_model_dir) == patched


def test_changed_upstream_code_falls_back_like_a_newer_version(tiny_model_dir, monkeypatch, caplog):
    import dataclasses

    phi = patches.PATCHES["phi_rotary"]
    monkeypatch.setitem(patches.PATCHES, "phi_rotary", dataclasses.replace(phi, fingerprints=frozenset({"0" * 16})))
    with caplog.at_level(logging.WARNING, logger=patches.__name__):
        assert _phi_rotary(tiny_model_dir) == 0
    [warning] = fence_warnings(caplog)
    assert "has changed (fingerprint " in warning and "PhiAttention.forward" in warning
    patches.enabled.cache_clear()
    monkeypatch.setenv(patches.FORCE_ENV, "all")
    assert _phi_rotary(tiny_model_dir) == 2


@pytest.mark.parametrize("force", ["", "slot_cache_greedy"])
def test_fenced_generation_equals_stock_generate(force, tiny_model_dir, tiny_tokenizer, monkeypatch, caplog):
    """With newer libraries greedy decoding goes through stock generate(); with the loop forced it decodes through the
    model's own attention and class forwards. Both give stock generate()'s tokens."""
    from sumtune.generation import encode_prompts, iter_token_ids
    from sumtune.prompts import build_messages

    model = _tiny(tiny_model_dir).eval()
    rows = [build_messages(f"Article number {i} about the council and the cycle path.", "")["prompt"]
            for i in range(3)]
    newer_libraries(monkeypatch)
    monkeypatch.setenv(patches.FORCE_ENV, force)
    with caplog.at_level(logging.WARNING, logger=patches.__name__):
        fenced = dict(iter_token_ids(model, tiny_tokenizer, rows, max_new_tokens=8, batch_size=3))
    warned = sorted(w.split("`")[1] for w in fence_warnings(caplog))
    assert warned == (["slot_cache_greedy"] if not force else ["phi_rotary", "slot_cache_greedy",
                                                                 "slot_decode_attention"])
    assert all("forward" not in vars(layer.self_attn) for layer in model.model.layers)
    eos = tiny_tokenizer.eos_token_id
    for i, ids in enumerate(encode_prompts(tiny_tokenizer, rows)):
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=eos)
        stock = out[0, len(ids):].tolist()
        assert fenced[i] == (stock[:stock.index(eos)] if eos in stock else stock)


def test_an_unknown_name_to_force_is_an_error(monkeypatch):
    monkeypatch.setenv(patches.FORCE_ENV, "phi_rotary,phi_rotory")
    with pytest.raises(ConfigError, match=r"SUMTUNE_FORCE_PATCHES names unknown patches \['phi_rotory'\]"):
        patches.enabled("phi_rotary")
