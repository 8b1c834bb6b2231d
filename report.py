"""Write a run's report (report.md with loss, ROUGE and length plots, example summaries) and put the evaluation
scores into the model cards of its adapter and merged model.

    python report.py --run_dir outputs/phi-2-xsum-qlora finetuned=outputs/phi-2-xsum-qlora/eval/merged \
        base=outputs/phi-2-xsum-qlora/eval/base lead=outputs/phi-2-xsum-qlora/eval/lead
    python report.py --run_dir outputs/demo finetuned=outputs/demo/eval/merged base=outputs/demo/eval/base
"""

import argparse

from sumtune.cli import run
from sumtune.config import ConfigError


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[3:]))
    parser.add_argument("evaluations", nargs="+", metavar="NAME=EVAL_DIR",
                        help="evaluate.py output folders, each under the name the report shows it with")
    parser.add_argument("--run_dir", required=True, help="train.py's --output_dir (holds adapter/ and merged/)")
    parser.add_argument("--output_dir", help="where report/ goes (default: RUN_DIR/report)")

    def error(message):
        raise ConfigError(f"{message}. `python report.py --help` shows the usage.")

    parser.error = error
    return parser.parse_args(argv)


def main():
    args = parse()
    from sumtune.report import parse_pairs, write_report  # plotting and data libraries load after the arguments

    path = write_report(args.run_dir, parse_pairs(args.evaluations), args.output_dir)
    print(f"Report written to {path}")


if __name__ == "__main__":
    run(main)
