"""The entry points' command line: `--help` of each script, the recipe parser's stage rules, the one-line config."""

import dataclasses
import logging
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from helpers_crash import ENV

from sumtune.commands import COMMANDS
from sumtune.config import (
    SCHEMA,
    STAGE_SETTINGS,
    ConfigError,
    DataArguments,
    EvalArguments,
    TrainArguments,
    config_summary,
    parse_args,
)

SCRIPTS = ("train.py", "evaluate.py", "merge.py", "prepare_data.py", "summarize.py")


@pytest.fixture(scope="module")
def helps():
    sumtune = str(Path(sys.executable).parent / "sumtune")  # the console script `pip install -e .` puts beside python

    def run(command):
        return command, subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)

    commands = [(sys.executable, script, "--help") for script in SCRIPTS] + [(sumtune, "--help"),
                                                                             (sumtune, "eval", "--help")]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, commands))


def listed_settings(help_text: str) -> set[str]:
    """The settings a --help lists (`--no_x` complements count as `x`)."""
    flags = set(re.findall(r"^  (?:-h, )?--([a-z0-9_]+)", help_text, flags=re.MULTILINE))
    return {flag[3:] if flag.startswith("no_") and flag[3:] in flags | _all_settings() else flag
            for flag in flags} - {"help", "config"}


def _all_settings() -> set[str]:
    return {f.name for cls in SCHEMA for f in dataclasses.fields(cls) if f.init}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_of_each_script_lists_only_its_own_settings(helps, script):
    result = helps[(sys.executable, script, "--help")]
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: python {script}")
    assert listed_settings(result.stdout) == set(STAGE_SETTINGS[script])
    assert "Traceback" not in result.stderr
    assert "Failed to load" not in result.stderr  # bitsandbytes' Hub-kernel warning on AVX512-BF16 CPUs (cli.py)


@pytest.mark.slow
def test_the_sumtune_command_lists_its_commands_and_each_takes_its_stages_settings(helps):
    sumtune = str(Path(sys.executable).parent / "sumtune")
    listing = helps[(sumtune, "--help")]
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert all(f"  {name} " in listing.stdout for name in COMMANDS)
    evaluation = helps[(sumtune, "eval", "--help")]
    assert evaluation.returncode == 0 and evaluation.stdout.startswith("usage: sumtune eval")
    assert listed_settings(evaluation.stdout) == set(STAGE_SETTINGS["evaluate.py"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_the_stage_settings_with_their_texts(script, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--help"], script=script)
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    assert listed_settings(shown) == set(STAGE_SETTINGS[script])
    if "bootstrap_samples" in STAGE_SETTINGS[script]:
        assert "95% confidence intervals" in " ".join(shown.split())  # a help text with a percentage expands


@pytest.mark.parametrize(("script", "flag", "owner"), [
    ("merge.py", "--learning_rate=1e-3", "train.py"), ("prepare_data.py", "--num_beams", "evaluate.py"),
    ("evaluate.py", "--lora-r", "train.py"), ("summarize.py", "--output_dir", "evaluate.py"),
    ("train.py", "--predictions_file", "evaluate.py"),
])
def test_a_flag_of_another_stage_is_one_error_naming_the_stage_that_takes_it(script, flag, owner, capsys):
    from sumtune.cli import run

    argv = ["--config", "recipes/tiny/demo.yaml", flag, *([] if "=" in flag else ["1"])]
    with pytest.raises(SystemExit) as stopped:
        run(lambda: parse_args(argv, script=script))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stopped.value.code == 2 and len(errors) == 1
    name = flag[2:].split("=")[0].replace("-", "_")
    assert f"`--{name}` is not a setting of python {script}" in errors[0] and owner in errors[0]


def test_one_recipe_drives_every_stage(in_repo):
    """Each stage accepts the recipe whole (it ignores the keys of other stages) and keeps unknown keys fatal."""
    for script in SCRIPTS:
        parse_args(["--config", "recipes/smollm2-135m/demo-cpu.yaml"], script=script)


def test_bitsandbytes_hub_kernel_warning_is_dropped_and_its_other_messages_kept(caplog):
    import sumtune.cli  # noqa: F401  (installs the filter)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
                       "`pip install kernels`", "No module named 'kernels'")
        logger.warning("Failed to load the CPU library")
    assert [record.getMessage() for record in caplog.records if record.name == logger.name] == [
        "Failed to load the CPU library"]


def test_every_help_text_expands():
    """argparse formats help texts with `%`: a bare one (`95% confidence`) crashes --help."""
    from trl import ModelConfig, TrlParser

    parser = TrlParser((DataArguments, EvalArguments, TrainArguments, ModelConfig))
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help:
            formatter._expand_help(action)


def test_bf16_recipe_parses_for_stages_that_train_nothing(in_repo):
    for script in ("prepare_data.py", "evaluate.py", "summarize.py"):
        _, _, training_args, model_args = parse_args(["--config", "recipes/phi-2/qlora.yaml"], script=script)
        assert training_args.bf16 and model_args.dtype == "bfloat16"  # the recipe's values, kept as given
    if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        with pytest.raises(ConfigError, match="bf16 is set but this machine"):
            parse_args(["--config", "recipes/phi-2/qlora.yaml"], script="train.py")


def test_entry_points_need_a_model_unless_scoring_a_file_or_baseline():
    with pytest.raises(ConfigError, match=r"No model given: pass a recipe .*--model_name_or_path\.$"):
        parse_args([], script="train.py")
    with pytest.raises(ConfigError, match="--baseline lead"):
        parse_args([], script="evaluate.py")
    parse_args(["--baseline", "lead"], script="evaluate.py")
    parse_args([])  # library callers set the model later


def test_messages_name_the_script_that_parses(tmp_path):
    with pytest.raises(ConfigError, match=r"python evaluate.py --help"):
        parse_args(["--no_such_flag", "1"], script="evaluate.py")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lora_rnak: 8\n")
    with pytest.raises(ConfigError, match=r"python prepare_data.py --help"):
        parse_args(["--config", str(recipe)], script="prepare_data.py")


def test_duplicate_recipe_key_names_key_and_lines(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lora_r: 8\nlearning_rate: 1.0e-4\nlora_r: 16\n")
    with pytest.raises(ConfigError, match=r"sets `lora_r` twice \(lines 1 and 3\)"):
        parse_args(["--config", str(recipe)])
    recipe.write_text("env:\n  A: 1\n  A: 2\n")
    with pytest.raises(ConfigError, match="sets `A` twice"):
        parse_args(["--config", str(recipe)])


def test_config_summary_is_one_short_line(in_repo):
    data_args, _, training_args, model_args = parse_args(["--config", "recipes/tiny/demo.yaml"])
    line = config_summary(data_args, training_args, model_args)
    assert "\n" not in line and len(line) < 300
    for part in ("model outputs/demo-tiny/base-model (4-bit, LoRA r=16)", "data data/demo", "5 epochs",
                 "lr 0.003 cosine", "batch 8 per device x 1 accumulation", "full precision",
                 "output outputs/demo-tiny"):
        assert part in line, (part, line)
    _, _, training_args, model_args = parse_args(["--config", "recipes/tiny/demo.yaml", "--max_steps", "7"])
    assert "7 steps" in config_summary(data_args, training_args, model_args)


def test_no_pin_memory_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_args([])[2].dataloader_pin_memory is False
