"""The one rule every stage's output follows: reuse a finished one made with the same settings, make it when there is
none or on --overwrite_output_dir, refuse one made with other settings naming what differs; `.tmp` means unfinished."""

import logging
from pathlib import Path

import pytest

from sumtune.config import ConfigError
from sumtune.manifest import publish_dir, tmp_dir_for
from sumtune.stage import check_output_name, is_unfinished, refusal, reuse_or_make, settings_changes

SETTINGS = {"max_length": 1024, "seed": 42, "data": {"dataset_name": "xsum", "max_train_samples": None}}


def test_same_settings_are_reused(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sumtune.stage"):
        assert reuse_or_make(tmp_path, "prepared data", SETTINGS, SETTINGS, overwrite=False) is True
    assert f"{tmp_path} already holds prepared data made with these settings: reusing it" in caplog.text


def test_settings_read_back_from_json_are_the_same_settings(tmp_path):
    made_with = {"paths": ["a", "b"], "folder": str(tmp_path)}
    assert reuse_or_make(tmp_path, "an adapter", made_with, {"paths": ("a", "b"), "folder": tmp_path}, False)


def test_nothing_finished_is_made(tmp_path):
    assert reuse_or_make(tmp_path / "absent", "a merged model", None, SETTINGS, overwrite=False) is False
    # a stage that only adds files to its folder makes them beside whatever is there
    assert reuse_or_make(tmp_path, "an evaluation", None, SETTINGS, overwrite=False) is False


def test_other_settings_are_refused_naming_the_folder_the_change_and_the_fix(tmp_path):
    changed = SETTINGS | {"max_length": 512, "data": SETTINGS["data"] | {"max_train_samples": 100}}
    with pytest.raises(ConfigError) as refused:
        reuse_or_make(tmp_path, "prepared data", SETTINGS, changed, overwrite=False)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path} already holds prepared data made with other settings (")
    # a value changed is named before one recorded on one side only
    assert "(max_length: 1024 -> 512; data.max_train_samples: None -> 100)" in message
    assert "seed" not in message and "dataset_name" not in message  # only what differs
    assert message.endswith(": pass --overwrite_output_dir true to replace it, or a new --output_dir.")


def test_overwrite_makes_it_again_whatever_is_there(tmp_path):
    assert reuse_or_make(tmp_path, "prepared data", SETTINGS, SETTINGS, overwrite=True) is False
    assert reuse_or_make(tmp_path, "prepared data", SETTINGS, {"seed": 0}, overwrite=True) is False
    assert reuse_or_make(tmp_path, "a merged model", None, SETTINGS, overwrite=True, occupied=True) is False


def test_a_folder_holding_something_else_is_refused_where_the_stage_would_replace_it(tmp_path):
    with pytest.raises(ConfigError, match=r"already holds files, but not a merged model: pass "
                                          r"--overwrite_output_dir true to replace it, or a new --output_dir\."):
        reuse_or_make(tmp_path, "a merged model", None, SETTINGS, overwrite=False, occupied=True)


def test_a_refusal_names_a_few_changes_and_counts_the_rest():
    old, new = {f"k{i}": i for i in range(7)}, {f"k{i}": i + 1 for i in range(7)}
    message = str(refusal("out", "an adapter", old, new))
    assert "(k0: 0 -> 1; k1: 1 -> 2; k2: 2 -> 3; k3: 3 -> 4; and 3 more)" in message
    assert "k4" not in message
    long = str(refusal("out", "an adapter", {"path": "x" * 200}, {"path": "y"}))
    assert "'xxx" in long and "x" * 100 not in long  # long values are cut


def test_an_unfinished_output_says_how_to_resume_and_names_its_flag():
    message = str(refusal("out.jsonl.partial", "predictions", {"max_new_tokens": 8}, {"max_new_tokens": 16},
                          flag="--output_file", resumable=True))
    assert "(max_new_tokens: 8 -> 16)" in message
    assert message.endswith("or a new --output_file (the same settings resume it).")


def test_changes_list_keys_missing_on_either_side():
    assert settings_changes({"a": 1}, {"b": 2}) == ["a: 1 -> None", "b: None -> 2"]
    assert settings_changes({"a": 1, "z": 1}, {"z": 2}) == ["z: 1 -> 2", "a: 1 -> None"]
    assert settings_changes({"a": {"b": 1}}, {"a": {"b": 1}}) == []


def test_tmp_marks_unfinished_outputs(tmp_path):
    assert is_unfinished(tmp_path / "adapter.tmp") and is_unfinished("metrics.json.tmp")
    assert not is_unfinished(tmp_path / "adapter") and not is_unfinished(tmp_path / "tmp")
    with pytest.raises(ConfigError, match=r"--output_dir .*merged\.tmp ends in \.tmp, which marks unfinished"):
        check_output_name(tmp_path / "merged.tmp")
    check_output_name(tmp_path / "merged")


def test_an_output_is_built_unfinished_and_published_whole(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (tmp_path / "out.tmp").mkdir()
    (tmp_path / "out.tmp" / "half.txt").write_text("left by a killed run")
    tmp = tmp_dir_for(target)
    assert is_unfinished(tmp) and not tmp.exists()  # the leftover is gone
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    assert (target / "old.txt").is_file()  # the finished output stays until the new one is complete
    publish_dir(tmp, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert not any(is_unfinished(p) for p in Path(tmp_path).iterdir())


def test_the_real_model_stage_reuses_refuses_or_replaces_before_any_download(tmp_path, monkeypatch):
    from sumtune.manifest import write_manifest
    from sumtune.real_models import MODELS, build_real_model

    folder = tmp_path / "smollm2"
    folder.mkdir()
    write_manifest(folder, real_model="smollm2-135m", gguf_sha256=MODELS["smollm2-135m"].sha256, dtype="bfloat16")
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    assert build_real_model("smollm2-135m", folder, tmp_path / "cache", "bfloat16") == folder
    with pytest.raises(ConfigError, match=r"holds a real-model folder made with other settings \(dtype: 'bfloat16' "
                                          r"-> 'float32'\): pass --overwrite_output_dir true"):
        build_real_model("smollm2-135m", folder, tmp_path / "cache", "float32")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ConfigError, match="holds files, but not a real-model folder"):
        build_real_model("smollm2-135m", other, tmp_path / "cache")
