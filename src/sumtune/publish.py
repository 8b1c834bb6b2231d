"""Upload a run's merged model and its LoRA adapter to the Hugging Face Hub, each folder as it is, model card included.

The merged model goes to `HUB_REPO` and the adapter to `HUB_REPO-adapter`: each is a model of its own on the hub (its
card's `library_name` is `transformers` for one, `peft` for the other), and each loads from its repository's root
(`AutoModelForCausalLM.from_pretrained("user/name")`, `PeftModel.from_pretrained(base, "user/name-adapter")`).
Only scored models leave the machine: both cards must hold the evaluation results that `make report` writes.
A GGUF export (`make gguf`), where there is one, goes to `HUB_REPO-GGUF` with its own card, as GGUF repositories on the
hub are named; its scores are the merged model's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from .config import ConfigError, RunError
from .layout import ADAPTER_DIR, CARD_FILE, GGUF_DIR, MERGED_DIR

logger = logging.getLogger(__name__)

ADAPTER_REPO_SUFFIX = "-adapter"
# Each run folder, the `make` target that writes it, and the repository it goes to (a suffix to HUB_REPO).
FOLDERS = {MERGED_DIR: ("make merge", ""), ADAPTER_DIR: ("make train", ADAPTER_REPO_SUFFIX)}
# Uploaded when the run has it: the GGUF files of `make gguf` (layout.GGUF_DIR).
GGUF_REPO_SUFFIX = "-GGUF"


@dataclass(frozen=True)
class Upload:
    """One folder and the hub repository it is uploaded to, with its files (path in the folder, bytes)."""

    folder: Path
    repo_id: str
    files: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)


def human_size(size: int) -> str:
    """Bytes in the hub's decimal units: `512 B`, `4.2 kB`, `538.1 MB`."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _repo_problem(hub_repo: str | None) -> str | None:
    fix = "pass HUB_REPO=user/name (your hub user or organization, then a model name)."
    if not hub_repo:
        return f"No hub repository given: {fix}"
    if hub_repo.count("/") != 1:
        return f"HUB_REPO {hub_repo!r} is not of the form user/name: {fix}"
    for repo_id in (hub_repo, hub_repo + ADAPTER_REPO_SUFFIX):
        try:
            validate_repo_id(repo_id)
        except HFValidationError as err:
            return (f"HUB_REPO {hub_repo!r} cannot name a hub repository ({err}): use letters, digits, '-', '_' and "
                    f"'.', at most {96 - len(ADAPTER_REPO_SUFFIX)} characters in all.")
    return None


def _card_problem(folder: Path) -> str | None:
    """Why `folder` cannot be published: no model card, or a card without evaluation results."""
    card = folder / CARD_FILE
    hint = "run `make eval` and `make report` with this OUTPUT_DIR (the report writes the scores into both cards)."
    if not card.is_file():
        return f"{card} not found: {hint}"
    try:
        results = ModelCard.load(card).data.eval_results
    except Exception:  # any unreadable card: the fix is the same
        return f"{card} is not a readable model card: {hint}"
    if not results:
        return f"{card} holds no evaluation results: {hint}"
    return None


def list_files(folder: Path) -> tuple[tuple[str, int], ...]:
    return tuple((path.relative_to(folder).as_posix(), path.stat().st_size)
                 for path in sorted(folder.rglob("*")) if path.is_file())


def plan_uploads(run_dir: str | Path, hub_repo: str | None, token: str | None, dry_run: bool = False) -> list[Upload]:
    """The merged model and the adapter of `run_dir` (train.py's --output_dir), each with its repository; every
    problem (repository name, missing folder, card without scores, no token unless `dry_run`) raised at once."""
    run_dir = Path(run_dir)
    problems = [problem for problem in [_repo_problem(hub_repo)] if problem]
    uploads = []
    for name, (target, suffix) in FOLDERS.items():
        folder = run_dir / name
        if not folder.is_dir():
            problems.append(f"{folder} not found: run `{target}` with OUTPUT_DIR={run_dir} first (`make all` runs "
                            "every stage).")
            continue
        problem = _card_problem(folder)
        if problem:
            problems.append(problem)
        elif hub_repo:
            uploads.append(Upload(folder, hub_repo + suffix, list_files(folder)))
    if (run_dir / GGUF_DIR).is_dir() and hub_repo and not problems:
        uploads.append(Upload(run_dir / GGUF_DIR, hub_repo + GGUF_REPO_SUFFIX, list_files(run_dir / GGUF_DIR)))
    if not dry_run and not token:
        problems.append("No Hugging Face token: set HF_TOKEN to a token with write access (hub settings > Access "
                        "Tokens) or log in once with `hf auth login`; DRY_RUN=1 lists the uploads without one.")
    if problems:
        raise ConfigError(" ".join(problems))
    return uploads


def describe(uploads: list[Upload], private: bool, dry_run: bool) -> str:
    """What goes where: each repository (private or public) and the folder's files with their sizes."""
    visibility = "private" if private else "public"
    lines = []
    for up in uploads:
        lines.append(f"{'Would upload' if dry_run else 'Uploading'} {up.folder} ({len(up.files)} files, "
                     f"{human_size(up.size)}) to https://huggingface.co/{up.repo_id} ({visibility})")
        width = max(len(path) for path, _ in up.files)
        lines += [f"  {path:<{width}}  {human_size(size):>9}" for path, size in up.files]
    return "\n".join(lines)


def upload(uploads: list[Upload], private: bool, token: str, api: HfApi | None = None) -> list[str]:
    """Create each repository (kept as it is if it exists, visibility included) and upload its folder in one
    commit; returns the repositories' URLs."""
    api = api or HfApi(token=token)
    urls = []
    for up in uploads:
        try:
            url = api.create_repo(up.repo_id, private=private, repo_type="model", exist_ok=True)
            api.upload_folder(repo_id=up.repo_id, folder_path=str(up.folder), repo_type="model",
                              commit_message=f"Upload {up.folder.name} from sumtune")
        except HfHubHTTPError as err:
            raise RunError(f"The hub refused {up.repo_id}: {str(err).splitlines()[0]}. Check that the token has "
                           f"write access and that {up.repo_id.split('/')[0]} is your user or one of your "
                           "organizations.") from None
        logger.info("Uploaded %s to %s", up.folder, url)
        urls.append(str(url))
    return urls
