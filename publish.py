"""Upload a run's merged model (to HUB_REPO) and its LoRA adapter (to HUB_REPO-adapter) to the Hugging Face Hub, each
with its model card; only runs whose cards hold evaluation results (`make report`) are uploaded.

    python publish.py --run_dir outputs/phi-2-xsum-qlora --hub_repo user/phi-2-xsum --dry_run   # what would go where
    HF_TOKEN=hf_... python publish.py --run_dir outputs/phi-2-xsum-qlora --hub_repo user/phi-2-xsum --private
"""

import argparse

from sumtune.cli import run
from sumtune.config import ConfigError


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[3:]))
    parser.add_argument("--run_dir", required=True, help="train.py's --output_dir (holds adapter/ and merged/)")
    parser.add_argument("--hub_repo", required=True, help="user/name: the merged model's repository; the adapter "
                                                          "goes to user/name-adapter")
    parser.add_argument("--private", action="store_true", help="create the repositories private")
    parser.add_argument("--dry_run", action="store_true", help="list the files and repositories; upload nothing")

    def error(message):
        raise ConfigError(f"{message}. `python publish.py --help` shows the usage.")

    parser.error = error
    return parser.parse_args(argv)


def main():
    args = parse()
    from huggingface_hub import get_token

    from sumtune.publish import describe, plan_uploads, upload

    token = None if args.dry_run else get_token()
    uploads = plan_uploads(args.run_dir, args.hub_repo, token, args.dry_run)
    print(describe(uploads, args.private, args.dry_run))
    if not args.dry_run:
        for url in upload(uploads, args.private, token):
            print(f"Uploaded: {url}")


if __name__ == "__main__":
    run(main)
