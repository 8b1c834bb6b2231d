"""The learning curve: ROUGE against training rows, projected to 2x and 4x the rows (would more labelled rows pay?).

The recipe is trained on nested fractions of the prepared training rows, each adapter scored on the test rows.

    make data RECIPE=recipes/smollm2-135m/demo-cpu.yaml OUTPUT_DIR=outputs/demo       # OUTPUT_DIR/data, once
    python curve.py --config recipes/smollm2-135m/demo-cpu.yaml --output_dir outputs/demo
    python curve.py --config recipes/phi-2/qlora.yaml --output_dir outputs/phi-2-xsum-qlora --fractions 1/4,1/2,1 \
        --train_args="--max_steps -1 --num_train_epochs 2"

Writes OUTPUT_DIR/curve/ (one folder per size, curve.json, curve.png); `make report` then shows it. Run again with the
same settings, finished sizes are reused; `--overwrite_output_dir true` makes every size again.
"""

import argparse
import shlex

from sumtune.cli import run
from sumtune.config import ConfigError

TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


def boolean(text: str) -> bool:
    if text.lower() not in TRUE + FALSE:
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text.lower() in TRUE


def flags(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be split into flags ({err})") from None


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--config", required=True, help="the recipe every size is trained and scored with")
    parser.add_argument("--output_dir", required=True,
                        help="the run folder: its data/ (from `make data`) is the source; the curve goes to curve/")
    parser.add_argument("--data_dir", help="prepared data to take the rows from (default: OUTPUT_DIR/data)")
    parser.add_argument("--fractions", default="1/8,1/4,1/2,1",
                        help="fractions of the training rows, one size each (default: 1/8,1/4,1/2,1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the shuffle the nested sizes are taken from, and the bootstrap's (default: 0)")
    parser.add_argument("--model_name_or_path", help="the base model (default: the recipe's)")
    parser.add_argument("--train_args", type=flags, default=[],
                        help='more train.py flags for every size, e.g. --train_args="--learning_rate 1e-3"')
    parser.add_argument("--eval_args", type=flags, default=[],
                        help='more evaluate.py flags for every size, e.g. --eval_args="--num_beams 4"')
    parser.add_argument("--bootstrap_samples", type=positive, default=1000,
                        help="resamples of the test rows behind the projection's interval (default: 1000)")
    parser.add_argument("--overwrite_output_dir", type=boolean, default=False,
                        help="true: make every size again instead of reusing finished ones")

    def error(message):
        raise ConfigError(f"{message}. `python curve.py --help` shows the usage.")

    parser.error = error
    return parser.parse_args(argv)


def main():
    args = parse()
    from sumtune.curve import CURVE_FILE, CurveSpec, format_curve, parse_fractions, run_curve  # after the arguments

    spec = CurveSpec(recipe=args.config, run_dir=args.output_dir, fractions=parse_fractions(args.fractions),
                     data_dir=args.data_dir, seed=args.seed, model=args.model_name_or_path,
                     train_args=args.train_args, eval_args=args.eval_args,
                     bootstrap_samples=args.bootstrap_samples, overwrite=args.overwrite_output_dir)
    curve = run_curve(spec)
    print(format_curve(curve))
    print(f"Learning curve written to {spec.folder / CURVE_FILE} with its plot; `make report` adds it to the run's "
          "report.")


if __name__ == "__main__":
    run(main)
