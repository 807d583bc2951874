"""The figures a newcomer should see first, regenerated from the shipped protocols and
circuits on the bundled digits (offline), into docs/gallery/ (the README shows some):

    python analysis/gallery.py            # the shipped counts: ~10 minutes on 2 cores
    python analysis/gallery.py --quick    # fewer trials and epochs: ~2 minutes

Each figure is what `biotp plot RUN.h5 --what KIND` draws from a run this script makes
(run files go to --runs, default runs/gallery/; an existing one is reused, so delete it to
run again).  The commands that make the same figures by hand are printed as it goes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIRCUIT = "circuits/mlp.yaml"
DTP_TARGET = "dynamics.target={mode: gradient_step, beta: 0.5}"  # DTP's own top target (see the README)

# (run file stem, protocol, overrides (full, quick), figure kinds)
PROTOCOLS = [
    ("settle", "settle", ([], []), ["summary"]),
    ("settle_time_sweep", "settle_time_sweep",
     (["sweep.grid.seed=[0, 1]"], ["sweep.grid.seed=[0, 1]", "stimuli.count=200", "evaluate.every=50"]), ["summary"]),
    ("noise_robustness", "noise_robustness", ([], ["stimuli.count=200", "evaluate.every=50"]), ["summary"]),
    ("feedback_lesion", "feedback_lesion", ([], [f"phases.{i}.trials=100" for i in range(3)] + ["evaluate.every=20"]),
     ["summary"]),
    ("plasticity_block", "plasticity_block", ([], [f"phases.{i}.trials=100" for i in range(3)] + ["evaluate.every=20"]),
     ["summary"]),
    ("alignment_vs_bp", "alignment_vs_bp", ([], ["epochs=2"]), ["summary"]),
]


def commands(quick: bool, runs: Path) -> list[tuple[list[str], Path, list[str]]]:
    """[(biotp command, run file, figure kinds)] in the order they run."""
    out = []
    for stem, protocol, (full, small), kinds in PROTOCOLS:
        run = runs / f"{stem}.h5"
        sets = [a for s in (small if quick else full) for a in ("--set", s)]
        out.append((["run", f"protocols/{protocol}.yaml", *sets, "--out", str(run)], run, kinds))
    epochs = "2" if quick else "5"
    run = runs / "mlp-compare.h5"
    out.append((["compare", CIRCUIT, "--algorithms", "bp,fa,dfa,dtp,sdtp", "--epochs", epochs, "--out", str(run)], run,
                ["vs_bp", "cost"]))
    run = runs / "mlp-dtp.h5"
    out.append((["train", CIRCUIT, "--epochs", epochs, "--out", str(run)], run, ["filters"]))
    run = runs / "mlp-settling-vs-dtp.h5"
    out.append((["simulate", CIRCUIT, "--epochs", epochs, "--reference", "--set", DTP_TARGET,
                 "--out", str(run)], run, ["reference"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer trials and epochs (about 2 minutes)")
    parser.add_argument("--runs", type=Path, default=Path("runs/gallery"), help="directory for the run files "
                        "(relative to the repository)")
    parser.add_argument("--out", type=Path, default=Path("docs/gallery"), help="directory for the figures")
    parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args(argv)

    from biotp.cli import main as biotp
    from biotp.plots import plot

    os.chdir(ROOT)  # the commands name the shipped protocols and circuits by their paths in the repository
    args.runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    written = []
    for command, run, kinds in commands(args.quick, args.runs):
        if not run.exists():
            print("$ biotp " + shlex.join(command), flush=True)
            code = biotp([*command, "--quiet"])
            if code:
                return code
        print(f"$ biotp plot {run} --what {','.join(kinds)}", flush=True)
        written += plot(run, what=kinds, out=args.out, dpi=args.dpi)
    for path in written:
        print(f"{path}  {path.stat().st_size / 1024:.0f} kB")
    print(f"gallery: {len(written)} figures in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
