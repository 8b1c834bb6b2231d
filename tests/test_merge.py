"""Merging: the merged model computes what base + adapter computes, and existing output is protected."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM
from trl import ModelConfig

from sumtune.config import ConfigError
from sumtune.merge import merge_adapter


@pytest.fixture
def adapter_dir(tiny_model_dir, tiny_tokenizer, tmp_path):
    """A LoRA adapter with non-zero B weights (a freshly initialised adapter would be a no-op)."""
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    path = tmp_path / "adapter"
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_merged_logits_match_base_plus_adapter(tiny_model_dir, adapter_dir, tiny_tokenizer, tmp_path):
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32")
    merged_dir = merge_adapter(model_args, str(adapter_dir), tmp_path / "merged")
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "manifest.json").is_file()
    assert (merged_dir / "generation_config.json").is_file() and (merged_dir / "tokenizer.json").is_file()
    ids = tiny_tokenizer("The council approved a new cycle path.", return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(ids).logits.clone()
        reference = PeftModel.from_pretrained(base, adapter_dir)(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)(ids).logits
    assert not torch.allclose(reference, base_logits, atol=1e-3), "the adapter must change the output"
    torch.testing.assert_close(merged, reference, atol=1e-4, rtol=1e-4)


def test_merge_refuses_to_overwrite(tiny_model_dir, adapter_dir, tmp_path):
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32")
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already holds files, but not a merged model.*--overwrite_output_dir"):
        merge_adapter(model_args, str(adapter_dir), tmp_path / "merged")
    assert (tmp_path / "merged" / "keep.txt").is_file()
    merge_adapter(model_args, str(adapter_dir), tmp_path / "merged", overwrite=True)
    assert not (tmp_path / "merged" / "keep.txt").exists()


def test_merge_without_adapter_files_is_an_error(tiny_model_dir, tmp_path):
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="adapter"):
        merge_adapter(model_args, str(tmp_path / "empty"), tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_load_model_swaps_gelu_new_for_the_same_fused_gelu(tiny_model_dir, tiny_tokenizer):
    from sumtune.modeling import load_model

    model = load_model(ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32"), quantize=False)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert (model.config.hidden_act, reference.config.hidden_act) == ("gelu_pytorch_tanh", "gelu_new")
    ids = tiny_tokenizer("Heavy rain flooded roads across Kelby overnight.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-5)


def test_16bit_merge_is_done_in_fp32_then_cast(tiny_model_dir, adapter_dir, tmp_path):
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="bfloat16")
    merged_dir = merge_adapter(model_args, str(adapter_dir), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto")
    assert merged.dtype == torch.bfloat16
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    exact = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    name = "model.layers.0.self_attn.q_proj.weight"
    expected = exact.state_dict()[name].to(torch.bfloat16)  # one rounding, after the fp32 merge
    assert torch.equal(merged.state_dict()[name], expected)


def test_finished_merge_is_reused_unless_its_inputs_changed(tiny_model_dir, adapter_dir, tmp_path):
    import json

    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32")
    merged_dir = merge_adapter(model_args, str(adapter_dir), tmp_path / "merged")
    weights = merged_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert merge_adapter(model_args, str(adapter_dir), tmp_path / "merged") == merged_dir
    assert weights.stat().st_mtime_ns == stamp, "merged again instead of reusing"
    with pytest.raises(ConfigError, match=r"dtype: 'float32' -> 'bfloat16'.*--overwrite_output_dir true"):
        merge_adapter(ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="bfloat16"), str(adapter_dir),
                      tmp_path / "merged")
    (adapter_dir / "manifest.json").write_text(json.dumps({"created": "later"}))  # as train.py does when re-run
    with pytest.raises(ConfigError, match=r"adapter_manifest\."):
        merge_adapter(model_args, str(adapter_dir), tmp_path / "merged")
    assert weights.stat().st_mtime_ns == stamp


def test_qlora_adapter_is_merged_into_the_dequantized_4bit_weights_by_default(tiny_model_dir, adapter_dir,
                                                                              tiny_tokenizer, tmp_path):
    """The adapter learned against the 4-bit weights: the default merge reproduces the adapter on the 4-bit base,
    merging into the original weights does not, and the manifest says which was done and how close it came."""
    import json

    from sumtune.modeling import dequantize_4bit_linears, load_model

    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32", load_in_4bit=True,
                             bnb_4bit_quant_type="nf4", use_peft=True)
    ids = tiny_tokenizer("The council approved a new cycle path.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        # the adapter, unmerged, on the 4-bit weights exactly: bitsandbytes' CPU kernel (AVX512-BF16) would compute
        # with its block scales rounded to bf16 (logits off by up to ~1e-3 on this model)
        unmerged = PeftModel.from_pretrained(load_model(model_args), adapter_dir)
        dequantize_4bit_linears(unmerged)
        reference = unmerged(ids).logits
    default = merge_adapter(model_args, str(adapter_dir), tmp_path / "default")
    original = merge_adapter(model_args, str(adapter_dir), tmp_path / "original", merge_base="original")
    with torch.no_grad():
        from_4bit = AutoModelForCausalLM.from_pretrained(default, dtype=torch.float32)(ids).logits
        from_original = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32)(ids).logits
    torch.testing.assert_close(from_4bit, reference, atol=1e-3, rtol=1e-3)
    assert (from_original - reference).abs().max() > 10 * (from_4bit - reference).abs().max()
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (default, original)]
    assert [m["merged_into"] for m in manifests] == ["dequantized_4bit", "original"]
    assert manifests[0]["parity_vs_adapter"]["top1_agreement"] == 1.0
    assert manifests[0]["parity_vs_adapter"]["max_abs_logit_diff"] < manifests[1]["parity_vs_adapter"][
        "max_abs_logit_diff"]
