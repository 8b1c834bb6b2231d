"""notebooks/colab_t4.ipynb: stored clean, and run top to bottom on the CPU with the SmolLM2 demo's parameters."""

import re

import nbformat
import pytest
from conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "colab_t4.ipynb"
# What CI runs: the installed checkout, the SmolLM2-135M demo recipe (`make demo`'s), no TensorBoard server.
CPU_DEMO = {"INSTALL": False, "TENSORBOARD": False, "RECIPE": "recipes/smollm2-135m/demo-cpu.yaml",
            "ACCELERATE_CONFIG": "accelerate_configs/cpu.yaml"}


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} hold outputs: clear them (Edit > Clear all outputs) before committing"


def test_parameters_cell_comes_first_and_names_every_parameter():
    cells = code_cells(nbformat.read(NOTEBOOK, as_version=4))
    tagged = [i for i, cell in enumerate(cells) if "parameters" in cell.metadata.get("tags", [])]
    assert tagged == [0], "papermill needs one cell tagged `parameters`, before the install cell reads INSTALL"
    defined = {line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line}
    assert set(CPU_DEMO) | {"MODEL", "MAX_TRAIN_SAMPLES", "MAX_STEPS", "OUTPUT_DIR"} <= defined


def summary_line(cell) -> str:
    """The last line the cell printed, unless it is a log line (`2026-12-07 10:00:00,000 INFO ...`) or a progress
    bar (`Loading weights: 100%|...| 272/272 [00:00<00:00, 6447.38it/s]`): summarize.py prints the summary last."""
    printed = "".join(output.get("text", "") for output in cell.outputs).strip().splitlines()
    last = printed[-1].strip() if printed else ""
    return "" if re.match(r"\d{4}-\d\d-\d\d \d", last) or re.search(r"\d+/\d+ \[", last) else last


@pytest.mark.slow
def test_notebook_runs_the_cpu_demo_top_to_bottom(tmp_path):
    import papermill

    run_dir = tmp_path / "run"
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters=CPU_DEMO | {"OUTPUT_DIR": str(run_dir)},
                               cwd=str(ROOT), progress_bar=False)
    notebook = nbformat.read(executed, as_version=4)
    outputs = [output for cell in code_cells(notebook) for output in cell.outputs]
    text = "\n".join(output.get("text", "") if output.output_type == "stream"
                     else output.get("data", {}).get("text/markdown", "") for output in outputs)
    # the plain ROUGE table after `make eval` and the report's Markdown table, each with the three systems
    assert "rouge1" in text and "ROUGE-1 [95% CI]" in text
    for system in ("finetuned", "base", "lead"):
        assert f"| {system} |" in text
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == len(list((run_dir / "report").glob("*.png"))) == 3  # training, scores, lengths
    assert summary_line(code_cells(notebook)[-1]), "the pasted article got no summary"
    assert (run_dir / "merged" / "README.md").is_file()
