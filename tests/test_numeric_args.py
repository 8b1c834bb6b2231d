"""Every numeric setting out of its range stops the parse: one `error:` line naming the key, the value given, the
range and the fix, exit code 2, no traceback, nothing written (config.NUMERIC_RANGES is the one table of ranges)."""

import dataclasses
import subprocess
import sys
import typing

import pytest
import yaml
from conftest import ROOT
from helpers_crash import ENV
from trl import ModelConfig, SFTConfig, TrlParser

from sumtune.cli import run
from sumtune.config import NUMERIC_RANGES, SCHEMA, STAGE_SETTINGS, Range, parse_args

DEMO = ["--config", "recipes/tiny/demo.yaml"]


def outside(allowed: Range) -> float:
    """A value just outside the range: on its lower bound when that is excluded, else one below it; inf when it is
    unbounded."""
    if allowed.low is not None:
        return allowed.low if allowed.low_open else allowed.low - 1
    if allowed.high is not None:
        return allowed.high if allowed.high_open else allowed.high + 1
    return float("inf")


def parse_through_cli(argv: list[str], capsys, script: str = "train.py") -> tuple[int, str]:
    """parse_args under the entry points' wrapper (cli.run) of `script`: its exit code and stderr."""
    with pytest.raises(SystemExit) as stopped:
        run(lambda: parse_args(argv, script=script))
    return stopped.value.code, capsys.readouterr().err


def numeric_fields(*classes) -> set[str]:
    numeric = {int, float, int | None, float | None}
    return {f.name for cls in classes for f in dataclasses.fields(cls) if typing.get_type_hints(cls)[f.name] in numeric}


@pytest.mark.parametrize("key", sorted(NUMERIC_RANGES))
def test_out_of_range_value_stops_with_one_error_line(key, tmp_path, capsys, in_repo):
    allowed = NUMERIC_RANGES[key]
    value = outside(allowed)
    assert not allowed.allows(value)
    script = next(script for script, names in STAGE_SETTINGS.items() if key in names)  # a stage that takes it
    output = ["--output_dir", str(tmp_path / "out")] if "output_dir" in STAGE_SETTINGS[script] else []
    code, err = parse_through_cli([*DEMO, *output, f"--{key}", str(value)], capsys, script)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"`{key}` must be {allowed.describe()}" in errors[0]
    assert f", got {value}: give it a value in that range (in the recipe or as --{key})" in errors[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_out_of_every_range(value, capsys, in_repo):
    code, err = parse_through_cli([*DEMO, f"--learning_rate={value}"], capsys)
    assert code == 2 and f"`learning_rate` must be greater than 0 (0 trains nothing), got {value}:" in err


def test_a_recipe_value_is_checked_like_a_flag(tmp_path, capsys, in_repo):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((ROOT / "recipes/tiny/demo.yaml").read_text().replace("lora_r: 16", "lora_r: 0"))
    code, err = parse_through_cli(["--config", str(recipe)], capsys)
    assert code == 2 and "`lora_r` must be at least 1 (the adapter's rank), got 0:" in err
    assert "leave it out (default: 16)" in err


def test_every_problem_in_one_line(capsys, in_repo):
    code, err = parse_through_cli([*DEMO, "--max_steps", "0", "--seed", "-1", "--lora_dropout", "1"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1
    for named in ("`max_steps` must be", "`seed` must be", "`lora_dropout` must be at least 0 and below 1"):
        assert named in errors[0]


@pytest.mark.parametrize(("key", "value"), [
    ("max_steps", "-1"), ("warmup_steps", "0.05"), ("warmup_steps", "3"), ("max_grad_norm", "0"), ("seed", "0"),
    ("no_repeat_ngram_size", "0"), ("rouge_eval_samples", "0"), ("lora_dropout", "0"), ("mbr_epsilon", "0.5"),
    ("length_penalty", "-2"), ("num_train_epochs", "0.5"), ("learning_rate", "1e-9"),
])
def test_edge_values_in_range_parse(key, value, in_repo):
    parse_args([*DEMO, f"--{key}", value])


def test_unset_optional_settings_pass(tmp_path, in_repo):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((ROOT / "recipes/tiny/demo.yaml").read_text() + "generation_max_batch_tokens: null\n")
    assert parse_args(["--config", str(recipe)])[1].decoding.generation_max_batch_tokens is None


def test_every_row_names_an_option():
    parser = TrlParser(SCHEMA)
    assert set(NUMERIC_RANGES) <= {action.dest for action in parser._actions}


def test_every_numeric_setting_of_ours_and_of_the_recipes_has_a_range():
    ours = numeric_fields(*(cls for cls in SCHEMA if cls is not ModelConfig)) - numeric_fields(SFTConfig)
    in_recipes = {key for path in (ROOT / "recipes").rglob("*.yaml")
                  for key, value in yaml.safe_load(path.read_text()).items()
                  if isinstance(value, int | float) and not isinstance(value, bool)}
    adapter = {"lora_r", "lora_alpha", "lora_dropout"}
    missing = (ours | in_recipes | adapter) - set(NUMERIC_RANGES)
    assert not missing, f"add a row to config.NUMERIC_RANGES for {sorted(missing)}"


def test_train_script_writes_nothing_for_out_of_range_values(tmp_path):
    output = tmp_path / "out"
    result = subprocess.run([sys.executable, "train.py", *DEMO, "--output_dir", str(output), "--max_steps", "0",
                             "--num_train_epochs", "0", "--learning_rate", "-1"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for key in ("max_steps", "num_train_epochs", "learning_rate"):
        assert f"`{key}` must be" in errors[0]
    assert not output.exists() and result.stdout == ""
