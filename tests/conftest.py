"""Shared fixtures: a tiny Phi model and tokenizer built offline, and small article/summary files we write here."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_PHI2 = ROOT.parent / "shared" / "phi-2"

ARTICLES = [
    ("The council of Brackley approved a new cycle path on Monday.\nWork will start in the spring.\n"
     "Residents had asked for safer routes to school.", "Brackley council has approved a new cycle path."),
    ("Firefighters rescued a cat from a tree in Dunmore on Friday.\nThe cat was unharmed.\n"
     "Neighbours cheered as it was brought down.", "A cat has been rescued from a tree in Dunmore."),
    ("A bakery in Ashwell won a national award for its bread.\nThe owners have run it for twenty years.\n"
     "They plan to hire two more bakers.", "An Ashwell bakery has won a national bread award."),
    ("Heavy rain flooded roads across Kelby overnight.\nSeveral cars were stranded.\n"
     "The council said drains would be cleared.", "Roads in Kelby have been flooded by heavy rain."),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_rows(n: int, prefix: str = "row") -> list[dict]:
    return [{"id": f"{prefix}-{i}", "document": ARTICLES[i % 4][0], "summary": ARTICLES[i % 4][1]} for i in range(n)]


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A folder of train/validation/test JSONL splits in XSum's column names."""
    folder = tmp_path / "data"
    for split, n in (("train", 16), ("validation", 4), ("test", 4)):
        write_jsonl(folder / f"{split}.jsonl", make_rows(n, split))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight tiny Phi model and a byte-level BPE tokenizer trained on the shipped demo data."""
    from sumtune.tiny import build_tiny_model

    rows = [json.loads(line) for line in (ROOT / "data/demo/train.jsonl").read_text().splitlines()[:200]]
    texts = [r["document"] for r in rows] + [r["summary"] for r in rows] + [a for pair in ARTICLES for a in pair]
    texts.append((ROOT / "prompts/instruction.txt").read_text() + "Article:\nSummary:\n")
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, vocab_size=600, hidden_size=64)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from sumtune.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir), str(ROOT / "prompts/chat_template.jinja"))


@pytest.fixture
def in_repo(monkeypatch):
    """Run from the repository root, where recipes refer to prompts/ and data/ by relative path."""
    monkeypatch.chdir(ROOT)
    return ROOT
