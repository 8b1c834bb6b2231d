"""A merged model as GGUF files, the format llama.cpp, Ollama and LM Studio read (`make gguf`, export_gguf.py).

The conversion and the quantization are llama.cpp's own: its `convert_hf_to_gguf.py` writes the f16 file (with the
tokenizer, the chat template and the special tokens read from the merged folder), and its `llama_model_quantize`
(the library function behind the `llama-quantize` tool, reached through llama-cpp-python) makes q8_0 and q4_k_m
from it. Both come from the llama-cpp-python source package that `make install-gguf` builds; the converter is not
part of the installed wheel, so that step keeps the package's vendored converter folder in `.venv/llama.cpp`.

The export is a stage like the others (sumtune.stage): built in `gguf.tmp` and renamed into place complete, a
finished export with the same settings is reused, one with other settings refused.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .config import ConfigError, RunError
from .layout import GGUF_DIR, MERGED_DIR  # noqa: F401  (GGUF_DIR: OUTPUT_DIR/gguf, which `make publish` uploads)
from .manifest import check_output_path, publish_dir, read_manifest, tmp_dir_for, write_manifest
from .modelcard import MODELFILE_NAME
from .stage import check_output_name, reuse_or_make

logger = logging.getLogger(__name__)

# The architectures of the recipes, each checked in llama.cpp by tests/test_gguf.py; llama.cpp's converter knows
# many more, but an export of one nobody ran here could be wrong in ways only a runtime shows.
ARCHITECTURES = {"PhiForCausalLM": "Phi (Phi-2)", "LlamaForCausalLM": "Llama (SmolLM2)",
                 "Gemma3ForCausalLM": "Gemma 3"}
# f16 is the converter's output and the source of the others; each quantized type names llama.cpp's file type.
TYPES = {"f16": None, "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
DEFAULT_TYPES = ("f16", "q8_0", "q4_k_m")
# The file the Ollama Modelfile and the card's commands use, the first of these that was made: q8_0 scores like f16
# (docs/gguf.md) at half its size.
PREFERRED = ("q8_0", "f16", "q4_k_m")
# Where `make install-gguf` keeps llama.cpp's converter: inside the virtual environment it belongs to.
CONVERTER = Path(sys.prefix) / "llama.cpp" / "convert_hf_to_gguf.py"
INSTALL_HINT = "run `make install-gguf` (builds llama-cpp-python from source, ~4 min on 2 cores; docs/gguf.md)"


def file_name(model_name: str, gguf_type: str) -> str:
    """`demo-Q8_0.gguf`: the model's name and the type, as GGUF repositories on the hub name their files."""
    return f"{model_name}-{gguf_type.upper()}.gguf"


def model_name(merged_dir: Path) -> str:
    """The run's folder name for `OUTPUT_DIR/merged`, else the model folder's own name."""
    merged_dir = merged_dir.resolve()
    return merged_dir.parent.name if merged_dir.name == MERGED_DIR else merged_dir.name


def check_types(types) -> list[str]:
    unknown = [t for t in types if t not in TYPES]
    if unknown or not types:
        raise ConfigError(f"GGUF types {' '.join(unknown) or '(none)'} not known: pass some of "
                          f"{', '.join(TYPES)} (default: {' '.join(DEFAULT_TYPES)}).")
    return sorted(set(types), key=list(TYPES).index)


def check_merged(merged_dir: Path) -> str:
    """The architecture of the model in `merged_dir`; a missing folder or an architecture not exported is refused."""
    config = merged_dir / "config.json"
    if not config.is_file() or not any(merged_dir.glob("*.safetensors")):
        raise ConfigError(f"{merged_dir} holds no merged model (config.json and *.safetensors): run `make merge` with "
                          "this OUTPUT_DIR first, or pass --merged_dir with a model folder.")
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{config} is not readable JSON: merge the model again (`make merge OVERWRITE=1`).") from None
    arch = architectures[0] if architectures else None
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{merged_dir} holds a {arch or 'model of no named'} architecture, which `make gguf` "
                          f"does not export: it exports {', '.join(ARCHITECTURES.values())}. Use the transformers "
                          "folder as it is, or a recipe on one of those models.")
    return arch


def export_settings(merged_dir: Path, types: list[str]) -> dict:
    """What an export depends on: the merged model (its manifest changes whenever it is merged again) and the types."""
    return {"merged": str(merged_dir.resolve()), "merged_manifest": read_manifest(merged_dir), "types": types}


def exported_with(output_dir: Path) -> dict | None:
    """The settings a finished export in `output_dir` was made with; None when there is none."""
    manifest = read_manifest(output_dir)
    if not manifest or "gguf_files" not in manifest:
        return None
    if not all((output_dir / name).is_file() for name in manifest["gguf_files"]):
        return None
    return manifest.get("settings")


def toolchain():
    """llama-cpp-python and llama.cpp's converter, or the error that says how to install them."""
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
    if llama_cpp is None or not CONVERTER.is_file():
        missing = "llama-cpp-python" if llama_cpp is None else f"llama.cpp's converter ({CONVERTER})"
        raise ConfigError(f"{missing} is not installed: {INSTALL_HINT}.")
    return llama_cpp


def convert(merged_dir: Path, outfile: Path) -> None:
    """llama.cpp's converter, f16 out; its last line becomes the error when it fails."""
    # The converter puts its own copy of the `gguf` package (gguf-py, beside it) first on its path: it writes the
    # metadata keys of its own llama.cpp version, whatever `gguf` this environment has for reading.
    command = [sys.executable, str(CONVERTER), str(merged_dir), "--outfile", str(outfile), "--outtype", "f16"]
    logger.info("Converting %s with llama.cpp's converter", merged_dir)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise RunError(f"llama.cpp's converter could not convert {merged_dir}: {lines[-1] if lines else 'no output'}"
                       f" (exit code {done.returncode}); nothing was written.")


def quantize(llama_cpp, source: Path, outfile: Path, gguf_type: str) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, TYPES[gguf_type])
    params.nthread = os.cpu_count() or 1
    logger.info("Quantizing to %s with llama.cpp", gguf_type)
    if llama_cpp.llama_model_quantize(str(source).encode(), str(outfile).encode(), ctypes.byref(params)) != 0:
        raise RunError(f"llama.cpp could not quantize {source.name} to {gguf_type}; nothing was written.")


def gguf_metadata(path: Path) -> dict:
    """The chat template and special tokens a GGUF file carries (read with the `gguf` package)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    wanted = {"tokenizer.chat_template": "chat_template", "tokenizer.ggml.bos_token_id": "bos_token_id",
              "tokenizer.ggml.eos_token_id": "eos_token_id", "tokenizer.ggml.add_bos_token": "add_bos_token",
              "general.architecture": "architecture"}
    metadata = {}
    for key, name in wanted.items():
        field = reader.get_field(key)
        if field is not None:
            metadata[name] = field.contents()
    return metadata


def check_metadata(metadata: dict, tokenizer, outfile: Path) -> None:
    """The runtime's prompt and stop are the project's: the chat template the model was trained with, its EOS as the
    end-of-generation token, and no BOS added by the runtime where the project adds none."""
    problems = []
    if metadata.get("chat_template") != tokenizer.chat_template:
        problems.append("the chat template is not the merged model's")
    if metadata.get("eos_token_id") != tokenizer.eos_token_id:
        problems.append(f"EOS is token {metadata.get('eos_token_id')}, not {tokenizer.eos_token_id} "
                        f"({tokenizer.eos_token})")
    # llama.cpp drops a BOS the rendered template starts with when it adds its own (common/chat.cpp), so a runtime
    # that adds BOS matches the project only where the template writes one.
    if metadata.get("add_bos_token") and not tokenizer.chat_template.startswith("{{ bos_token }}"):
        problems.append("the runtime would add BOS, which the project's prompt does not have")
    if problems:
        raise RunError(f"llama.cpp's converter wrote {outfile.name} with other prompt settings than the model was "
                       f"trained with: {'; '.join(problems)}; nothing was written.")


def ollama_modelfile(tokenizer, instruction: str | None, gguf_file: str) -> str:
    """An Ollama Modelfile with the project's prompt: the chat template rendered once with Ollama's placeholders in
    place of the instruction and the article (`{{ .System }}`, `{{ .Prompt }}`), EOS as the stop, greedy."""
    from .prompts import build_messages, render_prompt

    system, article = "\x00SYSTEM\x00", "\x00PROMPT\x00"
    template = render_prompt(tokenizer, build_messages(system, article)["prompt"])
    template = template.replace(system, "{{ .System }}").replace(article, "{{ .Prompt }}")
    lines = [f"FROM ./{gguf_file}", f'TEMPLATE """{template}"""']
    if instruction:
        lines.append(f'SYSTEM """{instruction.strip()}"""')
    lines += [f'PARAMETER stop "{tokenizer.eos_token}"', "PARAMETER temperature 0"]
    return "\n".join(lines) + "\n"


def export_gguf(merged_dir: str | Path, output_dir: str | Path, types=DEFAULT_TYPES, overwrite: bool = False) -> Path:
    """`merged_dir` as GGUF files in `output_dir`, one per type, with an Ollama Modelfile, a model card and a
    manifest; built in `output_dir.tmp` and renamed into place complete."""
    merged_dir, output_dir = Path(merged_dir), Path(output_dir)
    types = check_types(types)
    arch = check_merged(merged_dir)
    check_output_path(output_dir)
    check_output_name(output_dir)
    if reuse_or_make(output_dir, "a GGUF export", exported_with(output_dir), export_settings(merged_dir, types),
                     overwrite, occupied=output_dir.exists()):
        return output_dir
    llama_cpp = toolchain()
    from .modelcard import write_gguf_card
    from .modeling import load_tokenizer

    # The merged folder's own template (the one it was trained with, BOS included where due) is what the converter
    # embeds; the tokenizer loaded with it is the reference for the checks and the Modelfile.
    template = merged_dir / "chat_template.jinja"
    tokenizer = load_tokenizer(str(merged_dir), str(template) if template.is_file() else None)
    name = model_name(merged_dir)
    tmp = tmp_dir_for(output_dir)
    try:
        tmp.mkdir()
        f16 = tmp / file_name(name, "f16")
        convert(merged_dir, f16)
        check_metadata(gguf_metadata(f16), tokenizer, f16)
        for gguf_type in types:
            if TYPES[gguf_type]:
                quantize(llama_cpp, f16, tmp / file_name(name, gguf_type), gguf_type)
        if "f16" not in types:
            f16.unlink()
        files = {file_name(name, t): t for t in types}
        main = file_name(name, next(t for t in PREFERRED if t in types))
        instruction_file = merged_dir / "instruction.txt"
        instruction = instruction_file.read_text(encoding="utf-8") if instruction_file.is_file() else None
        (tmp / MODELFILE_NAME).write_text(ollama_modelfile(tokenizer, instruction, main), encoding="utf-8")
        write_manifest(tmp, settings=export_settings(merged_dir, types), architecture=arch,
                       gguf_files={n: {"type": t, "bytes": (tmp / n).stat().st_size} for n, t in files.items()},
                       llama_cpp_python=getattr(llama_cpp, "__version__", None),  # the toolchain that ran
                       eos_token=tokenizer.eos_token, chat_template=tokenizer.chat_template)
        write_gguf_card(tmp, merged_dir, files, main, instruction is not None, published=output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing that looks like one
        raise
    publish_dir(tmp, output_dir)
    for file, gguf_type in files.items():
        logger.info("%s: %s (%.1f MB)", gguf_type, output_dir / file, (output_dir / file).stat().st_size / 1e6)
    return output_dir
