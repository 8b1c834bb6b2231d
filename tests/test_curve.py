"""The learning curve (`make curve`): nested sizes of the prepared training rows, each trained and scored by the entry
scripts, the saturating fit and its labelled projection, the stage rule per size, the report's section."""

import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import yaml
from conftest import ROOT, make_rows, write_jsonl
from helpers_crash import ENV

from sumtune import curve as curve_module
from sumtune.config import ConfigError
from sumtune.curve import (
    CurveSpec,
    curve_markdown,
    fit_curves,
    format_curve,
    make_subset,
    parse_fractions,
    plot_curve,
    point_sizes,
    project,
    run_curve,
    shuffled_order,
    value_at,
)
from sumtune.data import load_prepared, prepared_stats

PNG = b"\x89PNG\r\n\x1a\n"


# --- the fit, on literal numbers -------------------------------------------------------------------------------------

def test_fit_recovers_the_parameters_of_an_exact_saturating_curve():
    rows = np.array([100, 200, 400, 800, 1600])
    fit = fit_curves(rows, (40 - 60 * rows**-0.5)[None])
    assert fit["a"][0] == pytest.approx(40, abs=0.05)
    assert fit["b"][0] == pytest.approx(60, rel=0.01)
    assert fit["c"][0] == pytest.approx(0.5, abs=0.005)
    assert value_at({k: v[0] for k, v in fit.items()}, 6400) == pytest.approx(40 - 60 * 6400**-0.5, abs=0.05)


def noisy_scores(rows, a=40.0, b=200.0, c=0.5, test_rows=300, seed=1):
    """Per-row scores around a known curve: one line per size, the same number of test rows each."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(a - b * n**-c, 10, test_rows) for n in rows])


def test_projection_interval_holds_the_true_value_and_is_labelled_per_size():
    rows = [100, 200, 400, 800]
    result = project(rows, noisy_scores(rows), samples=500, seed=0)
    assert [p["rows"] for p in result["projections"]] == [1600, 3200]
    assert [p["factor"] for p in result["projections"]] == [2, 4]
    for p in result["projections"]:
        low, high = p["ci95"]
        assert low < p["value"] < high
        assert low < 40 - 200 * p["rows"] ** -0.5 < high
    two, four = result["projections"]
    assert four["ci95"][1] - four["ci95"][0] > two["ci95"][1] - two["ci95"][0]  # further out, less certain


def test_fewer_than_three_sizes_give_no_fit():
    result = project([100, 200], noisy_scores([100, 200]))
    assert result["fit"] is None and "needs at least 3" in result["reason"]


def test_a_curve_that_does_not_rise_gives_no_fit():
    rows = [100, 200, 400]
    falling = noisy_scores(rows)[::-1]
    result = project(rows, falling)
    assert result["fit"] is None and "does not rise" in result["reason"]


# --- fractions and nested sizes --------------------------------------------------------------------------------------

def test_fractions_parse_as_fractions_or_decimals_smallest_first():
    assert parse_fractions("1, 1/4,0.125,1/2") == [Fraction(1, 8), Fraction(1, 4), Fraction(1, 2), Fraction(1)]
    assert point_sizes(parse_fractions("1/8,1/4,1/2,1"), 100) == {
        12: Fraction(1, 8), 25: Fraction(1, 4), 50: Fraction(1, 2), 100: Fraction(1)}


@pytest.mark.parametrize("text, problem", [("1/8,2", "2 is not in (0, 1]"), ("0,1", "0 is not in (0, 1]"),
                                           ("a,1", "is not a list of fractions"), ("1/0", "is not a list"),
                                           ("", "is not a list"), ("1/2,0.5", "names a fraction twice")])
def test_bad_fractions_are_refused_naming_the_fix(text, problem):
    with pytest.raises(ConfigError, match="e.g. --fractions 1/8,1/4,1/2,1") as refused:
        parse_fractions(text)
    assert problem in str(refused.value)


def test_fractions_of_the_same_size_are_refused():
    with pytest.raises(ConfigError, match="--fractions 1/8 and 1/4 both give 1 of the 4 training rows"):
        point_sizes([Fraction(1, 8), Fraction(1, 4)], 4)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir):
    """A run folder as `make data` leaves it (24 training rows) and a recipe that trains the tiny model 2 steps."""
    from sumtune.config import DataArguments
    from sumtune.data import prepare_datasets, save_prepared
    from sumtune.modeling import load_tokenizer

    base = tmp_path_factory.mktemp("curve")
    source = base / "source"
    for split, n in (("train", 24), ("validation", 4), ("test", 4)):
        write_jsonl(source / f"{split}.jsonl", make_rows(n, split))
    recipe = yaml.safe_load((ROOT / "recipes/tiny/demo.yaml").read_text()) | {
        "model_name_or_path": str(tiny_model_dir), "dataset_name": str(source), "max_length": 256,
        "chat_template_path": str(ROOT / "prompts/chat_template.jinja"),
        "instruction_path": str(ROOT / "prompts/instruction.txt"), "report_to": "none", "eval_strategy": "no",
        "save_strategy": "no", "max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1,
        "rouge_eval_samples": 0, "max_new_tokens": 8, "bootstrap_samples": 200, "dataset_num_proc": 1}
    recipe_path = base / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    run = base / "run"
    # what prepare_data.py writes for this recipe (its prompt and max_length, which train.py checks)
    tokenizer = load_tokenizer(str(tiny_model_dir), recipe["chat_template_path"])
    data_args = DataArguments(dataset_name=str(source), instruction_path=recipe["instruction_path"])
    dataset, stats = prepare_datasets(data_args, tokenizer, recipe["max_length"], recipe["seed"])
    save_prepared(dataset, stats, run / "data")
    return recipe_path, run


def test_sizes_are_nested_prefixes_with_the_same_validation_and_test_rows(prepared, tmp_path):
    _, run = prepared
    stats = prepared_stats(run / "data")
    order = shuffled_order(stats["train"]["kept"], seed=0)
    ids = {}
    for rows in (3, 6, 12, 24):
        subset = load_prepared(make_subset(run / "data", stats, order, rows, tmp_path / str(rows), False))
        ids[rows] = subset["train"]["id"]
        assert subset["validation"]["id"] == load_prepared(run / "data")["validation"]["id"]
        assert subset["test"]["id"] == load_prepared(run / "data")["test"]["id"]
        assert prepared_stats(tmp_path / str(rows))["train"]["kept"] == rows
    assert len(ids[3]) == 3 and set(ids[3]) < set(ids[6]) < set(ids[12]) < set(ids[24])
    assert sorted(ids[24]) == sorted(load_prepared(run / "data")["train"]["id"])
    assert ids[24] != load_prepared(run / "data")["train"]["id"]  # shuffled, not the file's order


def test_each_stage_gets_only_its_own_flags(prepared, tmp_path, monkeypatch):
    """train.py gets the subset and its output folder, evaluate.py the adapter on the source's test rows."""
    recipe, run = prepared
    commands = []

    class Seen(Exception):
        pass

    def record(command, log, what):
        commands.append(command)
        if "evaluate.py" in command[1]:
            raise Seen  # both commands seen: stop before results are read

    monkeypatch.setattr(curve_module, "run_stage", record)
    spec = CurveSpec(recipe, tmp_path / "run", [Fraction(1, 2)], data_dir=run / "data", model="M",
                     train_args=["--learning_rate", "1e-3"], eval_args=["--num_beams", "2"], overwrite=True)
    with pytest.raises(Seen):
        run_curve(spec)
    point = tmp_path / "run" / "curve" / "rows-12"
    train, evaluate = ([str(part) for part in command[2:]] for command in commands)
    assert commands[0][:2] == [sys.executable, str(ROOT / "train.py")]
    assert train == ["--config", str(recipe), "--output_dir", str(point / "train"), "--dataset_name",
                     str(point / "data"), "--model_name_or_path", "M", "--overwrite_output_dir", "true",
                     "--learning_rate", "1e-3"]
    assert evaluate == ["--config", str(recipe), "--dataset_name", str(run / "data"), "--adapter_path",
                        str(point / "train" / "adapter"), "--output_dir", str(point / "eval"), "--model_name_or_path",
                        "M", "--overwrite_output_dir", "true", "--num_beams", "2"]
    assert not (point / "point.json").exists() and not (tmp_path / "run" / "curve" / "curve.json").exists()


# --- the whole curve on the tiny model -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_curve(prepared):
    """Two sizes (12 and 24 rows), each trained 2 steps by train.py and scored by evaluate.py."""
    recipe, run = prepared
    spec = CurveSpec(recipe, run, parse_fractions("1/2,1"), bootstrap_samples=200)
    return spec, run_curve(spec)


def test_tiny_curve_trains_and_scores_every_size_on_the_same_test_rows(tiny_curve):
    spec, curve = tiny_curve
    assert [(p["rows"], p["fraction"], p["steps"], p["test_rows"]) for p in curve["points"]] == [
        (12, "1/2", 2, 4), (24, "1", 2, 4)]
    for point in curve["points"]:
        low, high = point["ci95"]["rouge1"]
        assert low <= point["rouge1"] <= high
    saved = json.loads((spec.folder / "curve.json").read_text())
    assert saved["points"] == curve["points"] and saved["settings"]["recipe_hash"]
    assert saved["versions"]["torch"] and saved["created"].startswith("20")
    assert (spec.folder / "curve.png").read_bytes()[:8] == PNG
    assert not list(spec.folder.rglob("*.tmp"))
    small, large = (load_prepared(spec.folder / f"rows-{n}" / "data")["train"]["id"] for n in (12, 24))
    assert set(small) < set(large)
    # two sizes: the measured points only, and the printed table says why there is no projection
    assert all(result["fit"] is None for result in curve["projection"].values())
    table = format_curve(curve)
    assert "ROUGE-1 projection not possible: 2 sizes measured" in table
    assert table.count("projection") >= 3  # the 2x and 4x lines are labelled even when empty


def test_finished_sizes_are_reused_without_running_a_stage(tiny_curve, monkeypatch):
    spec, curve = tiny_curve
    stamps = {p: p.stat().st_mtime_ns for p in spec.folder.glob("rows-*/point.json")}

    def refuse(*_):
        raise AssertionError("a finished size was made again")

    monkeypatch.setattr(curve_module, "run_stage", refuse)
    again = run_curve(spec)
    assert again["points"] == curve["points"]
    assert {p: p.stat().st_mtime_ns for p in spec.folder.glob("rows-*/point.json")} == stamps


def test_a_changed_setting_is_refused_naming_it_and_the_fix(tiny_curve, monkeypatch):
    spec, _ = tiny_curve
    monkeypatch.setattr(curve_module, "run_stage", lambda *_: pytest.fail("refused too late"))
    changed = CurveSpec(spec.recipe, spec.run_dir, spec.fractions, train_args=["--learning_rate", "1e-3"])
    with pytest.raises(ConfigError, match=r"already holds a learning curve made with other settings \(train_args: "
                                          r"\[\] -> \['--learning_rate', '1e-3'\]\): pass --overwrite_output_dir true"):
        run_curve(changed)
    assert (spec.folder / "curve.json").is_file()


def test_the_report_shows_the_curve_plot_and_table(tiny_curve, tmp_path):
    from sumtune.report import parse_pairs, write_report

    spec, _ = tiny_curve
    report = write_report(spec.run_dir, parse_pairs([f"finetuned={spec.folder / 'rows-24' / 'eval'}"]),
                          tmp_path / "report")
    text = report.read_text()
    assert "## Learning curve" in text and "![Learning curve with the projection](curve.png)" in text
    assert "| **projection** | 48 | 2x | – | *–* |" in text and "projection not possible" in text
    assert (tmp_path / "report" / "curve.png").read_bytes()[:8] == PNG


def test_a_projection_is_labelled_as_one_in_table_plot_and_report(tmp_path):
    rows = [100, 200, 400, 800]
    scores = noisy_scores(rows)
    points = [{"rows": n, "fraction": f"1/{800 // n}", "steps": n // 8, "test_rows": 300,
               **{k: float(s.mean()) for k in ("rouge1", "rouge2", "rougeL")},
               "ci95": {k: [float(s.mean()) - 1, float(s.mean()) + 1] for k in ("rouge1", "rouge2", "rougeL")}}
              for n, s in zip(rows, scores, strict=True)]
    result = project(rows, scores, samples=200)
    curve = {"points": points, "projection": {k: result for k in ("rouge1", "rouge2", "rougeL")},
             "formula": curve_module.FORMULA, "interval": curve_module.INTERVAL}
    two = result["projections"][0]
    cell = f"{two['value']:.2f} [{two['ci95'][0]:.2f}, {two['ci95'][1]:.2f}]"
    assert f"| **projection** | 1600 | 2x | – | *{cell}* |" in "\n".join(curve_markdown(curve))
    line = next(line for line in format_curve(curve).splitlines() if " 1600 " in line)
    assert line.startswith("projection") and cell in line
    plot_curve(curve, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG


# --- the entry script: bad input is one error line -------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    ([], "holds no finished prepared data"),
    (["--fractions", "1/8,2"], "--fractions '1/8,2': 2 is not in (0, 1]"),
])
def test_bad_input_is_one_error_line(tmp_path, extra, message, capsys, monkeypatch):
    from sumtune.cli import run
    from sumtune.commands import curve

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stopped:  # curve.py's command, under the entry scripts' wrapper
        run(lambda: curve(["--config", "recipes/tiny/demo.yaml", "--output_dir", str(tmp_path / "run"), *extra]))
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --- the SmolLM2 demo, the whole command chain -----------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_demo_curve_goes_into_the_run_report(tmp_path):
    """`make data` and `make curve` on the demo recipe (SmolLM2-135M-Instruct, the shipped news), then `make report`:
    three nested sizes trained and scored, the curve's plot and its projection in the report."""
    from sumtune.real_models import build_real_model

    build_real_model("smollm2-135m", ROOT / "outputs" / "models" / "smollm2-135m")  # `make real-model`'s folder
    recipe, run = "recipes/smollm2-135m/demo-cpu.yaml", tmp_path / "run"

    def script(*argv):
        result = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                                timeout=1800)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    script("prepare_data.py", "--config", recipe, "--output_dir", run)
    printed = script("curve.py", "--config", recipe, "--output_dir", run, "--fractions", "1/4,1/2,1")
    curve = json.loads((run / "curve" / "curve.json").read_text())
    assert [(p["rows"], p["test_rows"]) for p in curve["points"]] == [(32, 24), (64, 24), (128, 24)]
    ids = [load_prepared(run / "curve" / f"rows-{n}" / "data")["train"]["id"] for n in (32, 64, 128)]
    assert set(ids[0]) < set(ids[1]) < set(ids[2])
    assert "projection" in printed and "Learning curve: ROUGE F1 x 100 on 24 test rows" in printed

    script("report.py", "--run_dir", run, f"finetuned={run / 'curve' / 'rows-128' / 'eval'}")
    text = (run / "report" / "report.md").read_text()
    assert "## Learning curve" in text and "![Learning curve with the projection](curve.png)" in text
    assert "| **projection** | 256 | 2x |" in text and "| **projection** | 512 | 4x |" in text
    assert (run / "report" / "curve.png").read_bytes()[:8] == PNG
