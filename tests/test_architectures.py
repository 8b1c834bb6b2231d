"""Decoder families beyond Phi: LoRA targets are checked against the model before anything runs, and tiny random-weight
Llama, Qwen2 and Gemma3 models go through prepare_data.py -> train.py (NF4 4-bit QLoRA) -> merge.py -> evaluate.py.

The entry points' own `main()` run in this process with their argv patched: the chain is the scripts' own, without a
fresh import of torch, transformers and TRL per stage (about 20 s each on a 2-core runner).
"""

import json
import runpy
import shutil
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file
from trl import ModelConfig

from sumtune.config import ConfigError
from sumtune.preflight import check_lora_targets

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PHI_LINEAR = "Its linear layers: dense, fc1, fc2, k_proj, q_proj, v_proj (and the output layer lm_head)"


def lora_args(model_dir, targets, to_save=None, use_peft=True) -> ModelConfig:
    return ModelConfig(model_name_or_path=str(model_dir), use_peft=use_peft, lora_target_modules=targets,
                       lora_modules_to_save=to_save)


def test_wrong_target_names_fail_listing_the_models_linear_layers(tiny_model_dir):
    with pytest.raises(ConfigError) as err:
        check_lora_targets(lora_args(tiny_model_dir, ["qproj", "vproj"]))
    message = str(err.value)
    assert f"LoRA target module(s) ['qproj', 'vproj'] match no layer of {tiny_model_dir} (PhiForCausalLM)" in message
    assert PHI_LINEAR in message and "Fix `lora_target_modules` in the recipe or on the command line." in message


def test_a_partly_wrong_list_fails_naming_only_the_missing_ones(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"\['o_proj', 'gate_proj'\] match no layer"):
        check_lora_targets(lora_args(tiny_model_dir, ["q_proj", "v_proj", "o_proj", "gate_proj"]))


@pytest.mark.parametrize("targets", [["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
                                     ["self_attn.q_proj", "lm_head"], "all-linear", r".*\.(q|v)_proj"])
def test_targets_the_model_has_pass(tiny_model_dir, targets):
    check_lora_targets(lora_args(tiny_model_dir, targets, ["embed_tokens", "lm_head"]))


def test_a_single_name_is_a_regex_over_full_names(tiny_model_dir):
    # TRL turns `--lora_target_modules q_proj` into the string "q_proj", which PEFT matches against whole names.
    model_args = lora_args(tiny_model_dir, ["q_proj"])
    assert model_args.lora_target_modules == "q_proj"
    with pytest.raises(ConfigError) as err:
        check_lora_targets(model_args)
    assert ("LoRA target pattern 'q_proj' matches no layer" in str(err.value)
            and "such as model.layers.0.self_attn.q_proj (list two or more names, or write '.*\\.q_proj')"
            in str(err.value))
    check_lora_targets(lora_args(tiny_model_dir, [r".*\.q_proj"]))


def test_a_norm_is_not_a_layer_lora_can_adapt(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"\['input_layernorm'\] match no layer"):
        check_lora_targets(lora_args(tiny_model_dir, ["q_proj", "input_layernorm"]))


def test_modules_to_save_must_exist(tiny_model_dir):
    with pytest.raises(ConfigError) as err:
        check_lora_targets(lora_args(tiny_model_dir, ["q_proj", "v_proj"], ["embed_tokens", "wte"]))
    message = str(err.value)
    assert "`lora_modules_to_save` ['wte'] match no module" in message and "its embeddings: embed_tokens" in message
    assert "Fix `lora_modules_to_save` in the recipe" in message and "match no layer" not in message


def test_without_peft_the_lora_settings_are_not_read(tiny_model_dir):
    check_lora_targets(lora_args(tiny_model_dir, ["qproj", "vproj"], ["wte"], use_peft=False))


def test_the_check_reads_the_config_and_no_weights(tiny_model_dir, tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "config.json", folder)
    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ConfigError, match="match no layer"):
        check_lora_targets(lora_args(folder, ["qproj", "vproj"]))


def run_entry_point(script: str, *argv, monkeypatch) -> None:
    """`script`'s main() with these arguments, as `python script ...` runs it (minus the process)."""
    main = runpy.run_path(str(ROOT / script))["main"]
    monkeypatch.setattr(sys, "argv", [script, *map(str, argv)])
    main()


def test_train_stops_on_wrong_targets_before_writing_anything(tiny_model_dir, data_dir, tmp_path, in_repo,
                                                              monkeypatch, capsys):
    from sumtune.cli import run

    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["train.py", "--config", "recipes/tiny/demo.yaml", "--model_name_or_path",
                                      str(tiny_model_dir), "--dataset_name", str(data_dir), "--output_dir", str(out),
                                      "--lora_target_modules", "qproj", "vproj", "--report_to", "none"])
    with pytest.raises(SystemExit) as exited:
        run(runpy.run_path(str(ROOT / "train.py"))["main"])
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "['qproj', 'vproj'] match no layer" in errors[0] and PHI_LINEAR in errors[0]
    assert not (out / "data").exists() and not (out / "adapter").exists()


FAMILIES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}


def tiny_family_model(family: str, tokenizer_dir, output_dir):
    """A random-weight 2-layer model of `family` with grouped key/value heads (4 query, 2 key/value), saved with the
    Phi tiny model's byte-level BPE tokenizer; for Gemma 3 that tokenizer starts every text with a BOS of its own, as
    Gemma's does."""
    import transformers as tf
    from tokenizers.processors import TemplateProcessing

    tokenizer = tf.AutoTokenizer.from_pretrained(tokenizer_dir)
    eos = bos = tokenizer.eos_token_id
    if family == "gemma3":
        backend = tokenizer.backend_tokenizer
        backend.add_special_tokens(["<bos>"])
        bos = backend.token_to_id("<bos>")
        backend.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
        tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>",
                                               eos_token=tokenizer.eos_token)
    shape = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=bos,
                 eos_token_id=eos, pad_token_id=eos)
    config = {
        "llama": lambda: tf.LlamaConfig(**shape),
        "qwen2": lambda: tf.Qwen2Config(**shape),
        # a sliding layer and a full one, as Gemma 3 alternates them; windows shorter than the prompts
        "gemma3": lambda: tf.Gemma3TextConfig(**shape, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                                              layer_types=["sliding_attention", "full_attention"]),
    }[family]()
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == FAMILIES[family]
    model.generation_config = tf.GenerationConfig(eos_token_id=eos, pad_token_id=eos, bos_token_id=bos)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def test_phi_projection_names_fail_on_a_llama_model(tiny_model_dir, tmp_path):
    model_dir = tiny_family_model("llama", tiny_model_dir, tmp_path / "llama")
    with pytest.raises(ConfigError) as err:
        check_lora_targets(lora_args(model_dir, ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]))
    assert "['dense', 'fc1', 'fc2'] match no layer" in str(err.value) and "(LlamaForCausalLM)" in str(err.value)
    assert ("Its linear layers: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj "
            "(and the output layer lm_head)") in str(err.value)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_goes_through_prepare_train_merge_evaluate(family, tiny_model_dir, data_dir, tmp_path, in_repo,
                                                          monkeypatch):
    base = tiny_family_model(family, tiny_model_dir, tmp_path / "base")
    # LoRA only, as the real-model recipes: the demo recipe's fully trained embeddings are a random-base aid.
    recipe = tmp_path / "recipe.yaml"
    # One recipe for every stage: each reads its own keys of it (max_length: data, training, evaluation).
    recipe.write_text("".join(line for line in (ROOT / "recipes/tiny/demo.yaml").read_text().splitlines(True)
                              if not line.startswith(("lora_modules_to_save", "max_length", "report_to")))
                      + "max_length: 256\nreport_to: none\n")
    run = tmp_path / "run"
    common = ["--config", recipe, "--model_name_or_path", base]

    for _ in range(2):  # the second run finds the data prepared with the same settings and reuses it
        run_entry_point("prepare_data.py", *common, "--dataset_name", data_dir, "--output_dir", run,
                        monkeypatch=monkeypatch)
    from sumtune import training

    built = []  # the class of the layer under the first adapter: the 4-bit base really trained
    build_trainer = training.build_trainer
    monkeypatch.setattr(training, "build_trainer", lambda *a, **kw: built.append(build_trainer(*a, **kw)) or built[-1])
    run_entry_point("train.py", *common, "--dataset_name", run / "data", "--output_dir", run,
                    "--lora_target_modules", *PROJECTIONS, "--max_steps", "2", "--per_device_train_batch_size", "4",
                    "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
                    monkeypatch=monkeypatch)
    q_proj = built[0].model.base_model.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == "Linear4bit" and q_proj.base_layer.weight.quant_type == "nf4"
    adapter = run / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(PROJECTIONS)
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert len(lora_b) == len(PROJECTIONS) * 2  # every projection of both layers
    # PEFT starts every B at zero: a non-zero B was trained
    assert all(v.abs().sum() > 0 for v in lora_b.values()), [k for k, v in lora_b.items() if not v.abs().sum()]
    assert all(torch.isfinite(v).all() for v in weights.values())

    run_entry_point("merge.py", *common, "--adapter_path", adapter, "--output_dir", run / "merged",
                    monkeypatch=monkeypatch)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32)
    assert type(merged).__name__ == FAMILIES[family]
    assert not any("lora" in name for name, _ in merged.named_parameters())

    run_entry_point("evaluate.py", *common, "--model_name_or_path", run / "merged", "--load_in_4bit", "false",
                    "--dataset_name", run / "data", "--output_dir", run / "eval", "--max_new_tokens", "6",
                    "--bootstrap_samples", "20", monkeypatch=monkeypatch)
    rows = [json.loads(line) for line in (run / "eval/predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(4)]
    assert all(isinstance(r["prediction"], str) for r in rows)
    metrics = json.loads((run / "eval/metrics.json").read_text())
    assert metrics["num_rows"] == 4 and metrics["mode"] == "model"

    # One prompt throughout, BOS first where the tokenizer starts texts with it: the template saved beside the adapter
    # and the merged model is the one that rendered the data and the prompts, and every manifest hashes it.
    from sumtune.prompts import template_hash

    saved = (adapter / "chat_template.jinja").read_text()
    assert saved.startswith("{{ bos_token }}") == (family == "gemma3")
    assert (run / "merged/chat_template.jinja").read_text() == saved
    prompt_hash = template_hash(saved, (ROOT / "prompts/instruction.txt").read_text())
    assert json.loads((run / "data/stats.json").read_text())["settings"]["prompt_hash"] == prompt_hash
    for folder in (adapter, run / "merged", run / "eval"):
        assert json.loads((folder / "manifest.json").read_text())["prompt_hash"] == prompt_hash, folder
