"""The tree's own rules: each run file's name is written once in src/ (sumtune.layout), summarizing does not lean on
evaluation, and no function in src/ outgrows a screen."""

import ast
import re

from conftest import ROOT

from sumtune import layout

SRC = ROOT / "src" / "sumtune"
LONGEST = 60  # lines a function in src/ may take


def test_each_run_file_name_is_written_once_in_src():
    names = [value for key, value in vars(layout).items() if key.endswith(("_FILE", "_DIR")) and isinstance(value, str)]
    assert "metrics.json" in names and "predictions.jsonl" in names and "adapter" in names
    files = [name for name in names if "." in name]  # file names are unmistakable as string literals
    for path in SRC.glob("*.py"):
        if path.name == "layout.py":
            continue
        for name in files:
            assert not re.search(rf"[\"']{re.escape(name)}[\"']", path.read_text()), f"{path.name} spells {name}"


def test_summarizing_does_not_import_evaluation():
    tree = ast.parse((SRC / "summarizing.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "evaluation" not in imported and "inferring" in imported


def test_no_function_in_src_is_longer_than_a_screen():
    long = [f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(SRC.glob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= LONGEST]
    assert not long, long
