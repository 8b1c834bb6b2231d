"""publish.py / `make publish`: the dry run's listing, each refusal, and the exact calls handed to the hub client
(a recording stand-in for HfApi: nothing leaves the machine)."""

import os
import re
import subprocess
import sys
from pathlib import Path
from unittest.mock import Mock

import pytest
from conftest import ROOT
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError

from sumtune.config import ConfigError, RunError
from sumtune.modelcard import Evaluation, write_model_card
from sumtune.publish import describe, plan_uploads, upload

SCORES = {"rouge1": 40.0, "rouge2": 20.0, "rougeL": 30.0}


def scored(run: Path) -> Evaluation:
    """An evaluation of the merged model made from the adapter, as evaluate.py's metrics.json records it."""
    metrics = {**SCORES, "ci95": {key: [value - 1, value + 1] for key, value in SCORES.items()}, "mode": "model",
               "model": str(run / "merged"), "adapter": str(run / "adapter"), "num_rows": 24}
    return Evaluation("finetuned", run / "eval" / "merged", metrics, "test", None)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run: adapter/ and merged/ with a few files each and the cards `make report` writes."""
    run = tmp_path / "run"
    files = {"adapter": {"adapter_model.safetensors": 3000, "adapter_config.json": 200},
             "merged": {"model.safetensors": 12000, "config.json": 500, "tokenizer.json": 700}}
    for kind, contents in files.items():
        for name, size in contents.items():
            (run / kind).mkdir(parents=True, exist_ok=True)
            (run / kind / name).write_bytes(b"x" * size)
        write_model_card(run / kind, kind, evaluations=[scored(run)])
    return run


def test_cards_of_the_fixture_hold_scores(run_dir):
    for kind in ("adapter", "merged"):
        assert ModelCard.load(run_dir / kind / "README.md").data.eval_results


def test_dry_run_lists_each_folder_its_files_and_repository(run_dir):
    uploads = plan_uploads(run_dir, "alice/xsum-phi2", token=None, dry_run=True)
    assert [(up.folder, up.repo_id) for up in uploads] == [(run_dir / "merged", "alice/xsum-phi2"),
                                                           (run_dir / "adapter", "alice/xsum-phi2-adapter")]
    card_size = (run_dir / "merged" / "README.md").stat().st_size
    assert dict(uploads[0].files) == {"README.md": card_size, "config.json": 500, "model.safetensors": 12000,
                                      "tokenizer.json": 700}
    listing = describe(uploads, private=True, dry_run=True)
    assert (f"Would upload {run_dir / 'merged'} (4 files, {(13200 + card_size) / 1000:.1f} kB) to "
            "https://huggingface.co/alice/xsum-phi2 (private)") in listing
    assert "https://huggingface.co/alice/xsum-phi2-adapter (private)" in listing
    assert re.search(r"^  model\.safetensors +12\.0 kB$", listing, re.M)
    assert re.search(r"^  adapter_config\.json +200 B$", listing, re.M)
    assert "(public)" in describe(uploads, private=False, dry_run=True)


def test_upload_hands_the_hub_client_one_repository_and_one_folder_each(run_dir):
    api = Mock()
    api.create_repo.side_effect = lambda repo_id, **_: f"https://huggingface.co/{repo_id}"
    uploads = plan_uploads(run_dir, "alice/xsum-phi2", token="hf_test")
    urls = upload(uploads, private=True, token="hf_test", api=api)
    assert api.mock_calls == [
        ("create_repo", ("alice/xsum-phi2",), {"private": True, "repo_type": "model", "exist_ok": True}),
        ("upload_folder", (), {"repo_id": "alice/xsum-phi2", "folder_path": str(run_dir / "merged"),
                               "repo_type": "model", "commit_message": "Upload merged from sumtune"}),
        ("create_repo", ("alice/xsum-phi2-adapter",), {"private": True, "repo_type": "model", "exist_ok": True}),
        ("upload_folder", (), {"repo_id": "alice/xsum-phi2-adapter", "folder_path": str(run_dir / "adapter"),
                               "repo_type": "model", "commit_message": "Upload adapter from sumtune"}),
    ]
    assert urls == ["https://huggingface.co/alice/xsum-phi2", "https://huggingface.co/alice/xsum-phi2-adapter"]


def test_a_refusal_by_the_hub_is_one_error_naming_the_repository(run_dir):
    api = Mock()
    api.create_repo.side_effect = HfHubHTTPError("403 Forbidden: no write access\ndetails",
                                                 response=Mock(headers={}))
    with pytest.raises(RunError, match=r"The hub refused alice/xsum-phi2: 403 Forbidden: no write access\. Check"):
        upload(plan_uploads(run_dir, "alice/xsum-phi2", token="hf_test"), private=False, token="hf_test", api=api)
    api.upload_folder.assert_not_called()


@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_refuses_a_model_without_evaluation_results(run_dir, kind):
    write_model_card(run_dir / kind, kind)  # the card train.py / merge.py write, before `make report`
    with pytest.raises(ConfigError, match=rf"{kind}/README\.md holds no evaluation results: run `make eval` and "
                                          r"`make report`"):
        plan_uploads(run_dir, "alice/xsum-phi2", token="hf_test")


def test_refuses_a_folder_without_a_model_card(run_dir):
    (run_dir / "merged" / "README.md").unlink()
    with pytest.raises(ConfigError, match=r"merged/README\.md not found: run `make eval` and `make report`"):
        plan_uploads(run_dir, "alice/xsum-phi2", token=None, dry_run=True)


def test_refuses_a_missing_folder_naming_the_stage_that_writes_it(run_dir):
    import shutil

    shutil.rmtree(run_dir / "adapter")
    with pytest.raises(ConfigError, match=rf"{run_dir / 'adapter'} not found: run `make train` with OUTPUT_DIR="):
        plan_uploads(run_dir, "alice/xsum-phi2", token=None, dry_run=True)


@pytest.mark.parametrize("hub_repo, problem", [
    ("", "No hub repository given"),
    ("xsum-phi2", "is not of the form user/name"),
    ("alice/models/xsum", "is not of the form user/name"),
    ("alice/xsum..phi2", "cannot name a hub repository"),
    ("alice/" + "x" * 90, "cannot name a hub repository"),  # valid alone, too long with -adapter
])
def test_refuses_a_bad_repository_id(run_dir, hub_repo, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        plan_uploads(run_dir, hub_repo, token=None, dry_run=True)


def test_refuses_an_upload_without_a_token_but_a_dry_run_needs_none(run_dir):
    with pytest.raises(ConfigError, match=r"No Hugging Face token: set HF_TOKEN"):
        plan_uploads(run_dir, "alice/xsum-phi2", token=None)
    assert plan_uploads(run_dir, "alice/xsum-phi2", token=None, dry_run=True)


def test_every_problem_is_named_at_once(run_dir):
    write_model_card(run_dir / "merged", "merged")
    with pytest.raises(ConfigError) as err:
        plan_uploads(run_dir, "xsum", token=None)
    assert all(text in str(err.value) for text in ("not of the form", "holds no evaluation", "No Hugging Face token"))


def no_token_env(tmp_path) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    return env | {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}  # no stored token either


def test_make_publish_dry_run_private(run_dir, tmp_path):
    result = subprocess.run(["make", "-s", "publish", f"OUTPUT_DIR={run_dir}", "HUB_REPO=alice/xsum-phi2", "DRY_RUN=1",
                             "PRIVATE=1"], cwd=ROOT, env=no_token_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "to https://huggingface.co/alice/xsum-phi2 (private)" in result.stdout
    assert "to https://huggingface.co/alice/xsum-phi2-adapter (private)" in result.stdout
    assert "adapter_model.safetensors" in result.stdout


def test_publish_without_a_token_is_one_error_line(run_dir, tmp_path):
    result = subprocess.run([sys.executable, "publish.py", "--run_dir", str(run_dir), "--hub_repo", "alice/xsum-phi2"],
                            cwd=ROOT, env=no_token_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: No Hugging Face token") and "Traceback" not in result.stderr
    assert result.stdout == ""  # nothing listed, nothing uploaded
