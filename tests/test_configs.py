"""Every recipe and accelerate config loads through the real parsers; bad keys stop with a clear error."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from sumtune.config import ConfigError, parse_args

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
ACCELERATE_CONFIGS = sorted((ROOT / "accelerate_configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_parses(recipe, in_repo):
    # bf16 recipes are for GPUs; `use_cpu` lets the real parser validate them on a CPU-only machine.
    extra = ["--use_cpu", "true"] if yaml.safe_load(recipe.read_text()).get("bf16") else []
    data_args, eval_args, training_args, model_args = parse_args(["--config", str(recipe), *extra])
    phi = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]
    llama = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    family = {"phi-2": phi, "tiny": phi, "smollm2-135m": llama, "gemma-3-270m": llama}[recipe.parent.name]
    assert model_args.lora_target_modules == family  # every attention and MLP projection of the architecture
    assert (model_args.lora_r, model_args.lora_alpha) == (16, 32)
    if recipe.name.startswith("lora"):  # LoRA on the 16-bit base
        assert not model_args.load_in_4bit and not model_args.load_in_8bit and model_args.dtype == "bfloat16"
    else:
        assert model_args.load_in_4bit and model_args.bnb_4bit_quant_type == "nf4" and model_args.use_bnb_nested_quant
    assert Path(training_args.chat_template_path).is_file() and Path(data_args.instruction_path).is_file()
    first_line = recipe.read_text().splitlines()[0]
    assert first_line.startswith("#"), "a recipe starts with a comment giving its command"
    assert str(recipe.relative_to(ROOT)) in recipe.read_text().split("\n\n")[0]


def test_t4_recipe_is_fp16_paged_adamw(in_repo):
    _, _, training_args, model_args = parse_args(["--config", "recipes/phi-2/qlora-t4.yaml"])
    assert training_args.fp16 and not training_args.bf16 and model_args.dtype == "float16"
    assert training_args.optim == "paged_adamw_8bit" and training_args.gradient_checkpointing


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert loaded.num_processes >= 1
    expected = {"single_gpu_t4.yaml": "fp16", "single_gpu.yaml": "bf16", "multi_gpu.yaml": "bf16", "cpu.yaml": "no",
                "multi_cpu.yaml": "no", "fsdp_qlora.yaml": "bf16", "multi_node.yaml": "bf16"}
    assert str(loaded.mixed_precision) == expected[config.name]


def test_unknown_recipe_key_is_named(tmp_path, in_repo):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text((ROOT / "recipes/tiny/demo.yaml").read_text() + "\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rat"):
        parse_args(["--config", str(recipe)])


def test_cli_prints_one_error_line_for_unknown_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("lora_rank: 8\n")
    result = subprocess.run([sys.executable, "train.py", "--config", str(recipe)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lora_rank" in errors[0] and "Traceback" not in result.stderr
