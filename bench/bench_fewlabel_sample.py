"""Benchmark: few-label artifact classification on ``emae sample-data``, cross-validated.

Pretrains (or reuses) the default autoencoder on ``unlabeled/volume.tif`` of the sample data, then
runs :func:`emae.commands.compare.compare` on ``labels.csv``: the pretrained encoder + 1x1-conv head
(frozen), the same architecture trained from scratch, an RBF SVM on handcrafted features and
logistic regression on the frozen pooled latents, on the same group-aware stratified folds and
nested label budgets. Prints the learning curves (macro-F1 mean +- std over folds per method and
budget), the final table at the largest budget, the mean seconds per fit, and whether the head beats
the CNN from scratch and the SVM at budgets <= 25 labels per class. ``--methods head-semi`` trains
semi-supervised on patches of ``unlabeled/volume.tif`` too.

Usage::

    python bench/bench_fewlabel_sample.py [--data DIR] [--encoder RUN] [--pretrain-steps 2000]
        [--steps 200] [--folds 5] [--budgets 5,10,25,all]
        [--methods head,cnn-scratch,svm-features,latent-logreg] [--work DIR] [--threads N]
        [--seed S] [--report-only [--pool-seeds 0,1,2]]

Without ``--data`` the sample data is written to ``WORK/sample-data`` (about 30 s; reused when
present). Without ``--encoder`` the encoder is ``WORK/encoder`` when it exists, else the default
conv-ae of ``bench_anomaly_scores.py`` (``runs/bench_anomaly_scores/models/conv-ae-s2000``) when
that run has finished on the same data, else a fresh :class:`~emae.train.config.PretrainConfig`
default run (``--pretrain-steps``) into ``WORK/encoder``. The comparison folder
``WORK/compare-*`` resumes an interrupted run (one result file per fit).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = REPO / "runs" / "bench" / "fewlabel_sample"
ANOMALY_BENCH_ENCODER = REPO / "runs" / "bench_anomaly_scores" / "models" / "conv-ae-s2000"
SMALL_BUDGETS = ("5", "10", "25")


def parse_budgets(text: str) -> list[int | None]:
    """``"5,10,all"`` as ``[5, 10, None]``."""
    return [None if b.strip() == "all" else int(b) for b in text.split(",")]


def machine() -> str:
    """CPU model and core count (``lscpu``'s model name on Linux)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def header(argv: list[str]) -> dict[str, Any]:
    """What every few-label benchmark prints first: command, machine, date, load, torch."""
    import torch

    info = {
        "command": shlex.join([".venv/bin/python", *argv]),
        "machine": machine(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_at_start": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    for key, value in info.items():
        print(f"{key:14s} {value}")
    return info


def summary_from_results(out: Path) -> dict[str, Any]:
    """The summary of the fits finished so far in a comparison folder (for interrupted runs).

    Same layout as ``summary.json``, over the folds present; ``n_folds`` tells how many.
    """
    from emae.classify.metrics import summarize_folds
    from emae.data.labels import load_labels

    settings = json.loads((out / "compare.json").read_text())
    rows = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    if not rows:
        raise SystemExit(f"{out} holds no finished fits yet")
    summary: dict[str, Any] = {"class_counts": load_labels(settings["labels"]).class_counts()}
    summary["methods"] = {}
    for method in settings["methods"]:
        for budget in settings["budgets"]:
            fits = [r for r in rows if r["method"] == method and r["budget"] == budget]
            if not fits:
                continue
            folded = summarize_folds([r["metrics"] for r in fits])
            folded["seconds"] = sum(r["seconds"] for r in fits) / len(fits)
            summary["methods"].setdefault(method, {})[budget] = folded
    return summary


def pooled_over_seeds(folders: list[Path], reference: str = "cnn-scratch") -> str:
    """Macro-F1 over every (seed, fold) of several comparison folders (one per ``--seed``: each
    seed draws other folds and subsets), and each method minus ``reference`` fit by fit."""
    import numpy as np

    f1: dict[tuple[str, str], dict[tuple[int, int], float]] = {}
    for s, folder in enumerate(folders):
        for path in sorted((folder / "results").glob("*.json")):
            row = json.loads(path.read_text())
            f1.setdefault((row["method"], row["budget"]), {})[(s, row["fold"])] = row["metrics"][
                "macro_f1"
            ]
    methods = list(dict.fromkeys(m for m, _ in f1))
    budgets = sorted({b for _, b in f1}, key=lambda b: (b == "all", int(b) if b != "all" else 0))
    lines = [
        f"| method | {' | '.join(f'{b} / class' for b in budgets)} |",
        "|---|" + "---|" * len(budgets),
    ]
    for method in methods:
        cells = []
        for budget in budgets:
            mine = f1.get((method, budget), {})
            if not mine:
                cells.append("-")
                continue
            values = np.array(list(mine.values()))
            cell = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
            ref = f1.get((reference, budget), {})
            both = sorted(set(mine) & set(ref))
            if method != reference and both:
                d = np.array([mine[k] - ref[k] for k in both])
                cell += (
                    f" ({d.mean():+.3f} ± {d.std(ddof=1):.3f} vs {reference}, ahead in "
                    f"{int((d > 0).sum())}/{len(d)})"
                )
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    n = len({k for v in f1.values() for k in v})
    return f"over {n} (seed, fold) fits per cell, mean ± sample std:\n" + "\n".join(lines)


def _mean_std(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.3f}" + ("" if stat["std"] is None else f" ± {stat['std']:.3f}")


def learning_curve_table(summary: dict[str, Any], metric: str = "macro_f1") -> str:
    """Markdown table: one row per method, one column per budget, ``mean ± std`` over folds."""
    methods = summary["methods"]
    budgets = list(next(iter(methods.values())))
    lines = ["| method | " + " | ".join(f"{b} / class" for b in budgets) + " |"]
    lines.append("|---|" + "---|" * len(budgets))
    for method, by_budget in methods.items():
        cells = [_mean_std(by_budget[b][metric]) if b in by_budget else "-" for b in budgets]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seconds_table(summary: dict[str, Any]) -> str:
    """Markdown table of the mean wall seconds per fit (method x budget)."""
    methods = summary["methods"]
    budgets = list(next(iter(methods.values())))
    lines = ["| method | " + " | ".join(f"{b} / class" for b in budgets) + " |"]
    lines.append("|---|" + "---|" * len(budgets))
    for method, by_budget in methods.items():
        cells = [f"{by_budget[b]['seconds']:.1f}" if b in by_budget else "-" for b in budgets]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Methods that use the pretrained autoencoder, each checked against the baselines.
PRETRAINED = ("head", "head-finetune", "head-semi", "cnn-residual")


def claim_check(summary: dict[str, Any], small: tuple[str, ...] = SMALL_BUDGETS) -> list[str]:
    """Per small budget and pretrained method: does its mean macro-F1 beat cnn-scratch's and
    svm-features'? (The goal: 0.10 above cnn-scratch at 5 labels per class.)"""
    methods = summary["methods"]
    lines = []
    for name in (m for m in PRETRAINED if m in methods):
        for budget in small:
            if budget not in methods[name]:
                continue
            ours = methods[name][budget]["macro_f1"]
            for rival in ("cnn-scratch", "svm-features"):
                if rival not in methods or budget not in methods[rival]:
                    continue
                other = methods[rival][budget]["macro_f1"]
                diff = ours["mean"] - other["mean"]
                spread = ((ours["std"] or 0) ** 2 + (other["std"] or 0) ** 2) ** 0.5
                verdict = "beats" if diff > 0 else "does NOT beat"
                sure = "more" if abs(diff) > spread else "less"
                lines.append(
                    f"budget {budget:>3}: {name} {ours['mean']:.3f} {verdict} {rival} "
                    f"{other['mean']:.3f} (difference {diff:+.3f}, {sure} than the fold spread "
                    f"{spread:.3f})"
                )
    return lines


def report(summary: dict[str, Any], out: Path, info: dict[str, Any], seconds: float) -> None:
    """Print the tables and write them, with the run's settings, to ``OUT/bench.json``."""
    from emae.commands.compare import markdown_table

    last = list(next(iter(summary["methods"].values())))[-1]
    final = markdown_table(summary, last)
    folds = {m: {b: s["n_folds"] for b, s in by.items()} for m, by in summary["methods"].items()}
    curves = learning_curve_table(summary)
    timing = seconds_table(summary)
    claims = claim_check(summary)
    print(f"\nclass counts   {summary['class_counts']}")
    print(f"folds per fit  {folds}")
    print("\nmacro-F1 (mean ± std over folds) by labels per class:\n" + curves)
    print("\nfinal table at the largest budget:\n" + final)
    print("mean wall seconds per fit:\n" + timing)
    if claims:
        print("\npretrained methods vs baselines at small budgets (mean macro-F1):")
        print("\n".join(claims))
    print(f"\ntotal {seconds / 60:.1f} min; load at end {[round(v, 2) for v in os.getloadavg()]}")
    record = {
        **info,
        "total_seconds": seconds,
        "load_at_end": [round(v, 2) for v in os.getloadavg()],
        "learning_curves": curves,
        "final_table": final,
        "seconds_table": timing,
        "claims": claims,
        "folds_done": folds,
    }
    (out / "bench.json").write_text(json.dumps(record, indent=2))


def find_encoder(args: argparse.Namespace, data: Path) -> Path:
    """``--encoder``, else a finished default run on ``data``, else a fresh default run."""
    from emae.commands.pretrain import pretrain
    from emae.folders.files import is_bundle
    from emae.train.config import PretrainConfig

    if args.encoder is not None:
        return args.encoder
    own = args.work / "encoder"
    if is_bundle(own):
        return own
    volume = (data / "unlabeled" / "volume.tif").resolve()
    if is_bundle(ANOMALY_BENCH_ENCODER):
        training = json.loads((ANOMALY_BENCH_ENCODER / "training.json").read_text())
        if training.get("sources") == [str(volume)]:
            print(f"reusing the encoder of bench_anomaly_scores.py: {ANOMALY_BENCH_ENCODER}")
            return ANOMALY_BENCH_ENCODER
    config = PretrainConfig(steps=args.pretrain_steps)
    resume = own.with_name(own.name + ".training").exists()
    began = time.perf_counter()
    pretrain([volume], own, config, resume=resume)
    print(f"pretrained {own} ({args.pretrain_steps} steps) in {time.perf_counter() - began:.0f} s")
    return own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="Sample data folder (default: write one).")
    parser.add_argument("--encoder", type=Path, help="Pretrained model folder to reuse.")
    parser.add_argument("--pretrain-steps", type=int, default=2000, help="If pretraining.")
    parser.add_argument("--steps", type=int, default=200, help="Classifier training steps.")
    parser.add_argument("--folds", type=int, default=5, help="Cross-validation folds.")
    parser.add_argument("--budgets", default="5,10,25,all", help="Labels per class.")
    parser.add_argument("--methods", default="head,cnn-scratch,svm-features,latent-logreg")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="Data, models, results.")
    parser.add_argument(
        "--encoder-lr-scale",
        type=float,
        default=0.1,
        help="Encoder rate / head rate of head-finetune (FinetuneConfig.encoder_lr_scale).",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of folds, subsets and fits.")
    parser.add_argument(
        "--report-only", action="store_true", help="Summarize the fits finished so far; no fits."
    )
    parser.add_argument(
        "--pool-seeds",
        help="With --report-only: pool the comparisons of these seeds (e.g. 0,1,2), fit by fit.",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from emae.classify.config import FinetuneConfig
    from emae.commands.compare import compare
    from emae.synth.sample_data import SampleDataConfig, write_sample_data

    if args.threads:
        torch.set_num_threads(args.threads)
    info = header(sys.argv)
    began = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = args.work / "sample-data"
        if not (data / "manifest.json").is_file():
            start = time.perf_counter()
            write_sample_data(data, SampleDataConfig())
            print(f"wrote sample data to {data} in {time.perf_counter() - start:.0f} s")
    encoder = find_encoder(args, data)
    pretraining = json.loads((encoder / "training.json").read_text())
    info["encoder"] = str(encoder)
    info["encoder_steps"] = pretraining["steps_done"]
    print(f"encoder        {encoder} ({pretraining['steps_done']} steps)")
    config = FinetuneConfig(steps=args.steps, encoder_lr_scale=args.encoder_lr_scale)
    info["finetune_config"] = config.model_dump(mode="json")
    print(
        f"classifier     FinetuneConfig(steps={args.steps}, "
        f"encoder_lr_scale={args.encoder_lr_scale}), other fields default"
    )
    methods = args.methods.split(",")
    out = args.work / f"compare-s{args.steps}-f{args.folds}-b{args.budgets.replace(',', '_')}"
    if args.seed:
        out = out.with_name(f"{out.name}-seed{args.seed}")
    if args.report_only and args.pool_seeds:
        seeds = [int(x) for x in args.pool_seeds.split(",")]
        base = out.name.split("-seed")[0]
        print(pooled_over_seeds([out.with_name(base + (f"-seed{s}" if s else "")) for s in seeds]))
        return
    if args.report_only:
        report(summary_from_results(out), out, info, time.perf_counter() - began)
        return
    summary = compare(
        data / "labels.csv",
        out,
        encoder=encoder,
        unlabeled=[data / "unlabeled" / "volume.tif"] if "head-semi" in methods else (),
        methods=methods,
        folds=args.folds,
        budgets=parse_budgets(args.budgets),
        config=config,
        seed=args.seed,
        progress=True,
    )
    print(f"results in {out}")
    report(summary, out, info, time.perf_counter() - began)


if __name__ == "__main__":
    main()
