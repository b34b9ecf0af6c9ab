"""Shared machinery of the studies: the (configuration, seed) grid loop over
``kd.training.run``, ``results.json`` rows, mean ± std tables and plots.

A study is a list of :class:`Config` (one training run, or one custom
measurement, each at one seed). :func:`run_grid` runs those whose row is not
yet in ``DIR/results.json`` (so a study re-run with the same output
directory resumes: finished configurations are skipped, an interrupted
training run continues from its ``backup/``) and rewrites the file
atomically after every configuration. Configurations that describe the same
run (same recipe changes and seed) share one key and so one row, e.g. the
128-d Proxy Anchor run of the loss table is also the 128-d point of the
dimension sweep.

A row of ``results.json``::

    {"key", "name", "loss", "dim", "seed", "params" (hyper-parameters that
     differ from the study's base recipe), "recipe" (the full recipe),
     "metrics" (final test metrics), "extra" (e.g. a second test split),
     "history" (per-epoch logs), "seconds"}
"""

import argparse
import dataclasses
import gc
import hashlib
import json
import math
import os
import shutil
import time
from typing import Callable, Optional

import numpy as np

RESULTS_FILE = "results.json"
REPORT_FILE = "results.md"


# ------------------------------------------------------------ configurations
@dataclasses.dataclass(frozen=True)
class Config:
    """One run of a study.

    Attributes:
      name: the row label in tables (e.g. "proxy_anchor", "log_ratio
        (random batches)"); runs of one name at several seeds are averaged.
      changes: recipe fields that differ from the study's base recipe
        (``loss``, ``embedding_dim``, ``loss_kwargs``, ``sampler`` ...).
      seed: the recipe seed (splits, batches, initialisation).
      measure: instead of a training run, ``measure(config) -> dict`` with
        at least "metrics" (e.g. the pretrained backbone without training);
        its row has no history.
    """

    name: str
    changes: tuple = ()
    seed: int = 0
    measure: Optional[Callable] = dataclasses.field(default=None, compare=False)

    @classmethod
    def make(cls, name, seed=0, measure=None, **changes):
        return cls(name, tuple(sorted(changes.items())), int(seed), measure)

    @property
    def change_dict(self):
        return dict(self.changes)

    @property
    def key(self):
        """A file-name-safe key naming the run: what it changes and its seed
        (the display name is not part of it, so two names for one run share
        the row)."""
        changes = self.change_dict
        loss = changes.get("loss", "base")
        text = json.dumps([self.measure is not None and self.name, self.changes],
                          sort_keys=True, default=str)
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        dim = changes.get("embedding_dim")
        return f"{loss}{'' if dim is None else f'-d{dim}'}-{digest}-s{self.seed}"


def seeds_of(configs):
    return sorted({c.seed for c in configs})


# ---------------------------------------------------------------- results
class Results:
    """``DIR/results.json``: rows keyed by ``Config.key``, saved atomically."""

    def __init__(self, output_dir):
        self.path = os.path.join(os.fspath(output_dir), RESULTS_FILE)
        self.rows = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                loaded = json.load(f)
            if not isinstance(loaded, dict) or not isinstance(loaded.get("rows"), list):
                raise ValueError(f"{self.path} is not a study results file (expected "
                                 '{"rows": [...]}).')
            self.rows = {row["key"]: row for row in loaded["rows"]}
            previous = loaded.get("meta") or {}
        else:
            previous = {}
        self.meta = {}
        # Wall time of the earlier invocations that wrote a report: a resumed
        # study (or one re-run only to rewrite its report) adds to it.
        self.earlier_seconds = float(previous.get("seconds", 0.0))
        self.earlier_invocations = int(previous.get("invocations", 1 if previous else 0))

    def __contains__(self, key):
        return key in self.rows

    def get(self, config):
        return self.rows.get(config.key)

    def add(self, row):
        self.rows[row["key"]] = row
        self.save()

    def save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"meta": self.meta, "rows": list(self.rows.values())}, f, indent=1,
                      sort_keys=True, default=_json_default)
        os.replace(tmp, self.path)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _floats(metrics):
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)}


def run_grid(configs, base_recipe, data, output_dir, *, task=None, extra=None,
             verbose=0, log=print):
    """Run every configuration of ``configs`` that has no row yet.

    Args:
      configs: :class:`Config` list (duplicates by key run once).
      base_recipe: the study's ``kd.training.Recipe``; each run is
        ``base_recipe.replace(**config.changes, seed=config.seed)``.
      data: the ``kd.data.RetrievalData`` every run trains and tests on.
      output_dir: the study directory (runs in ``output_dir/runs/<key>``).
      task: a ``kd.training.Task`` (default from ``data.label_type``).
      extra: ``extra(result, recipe) -> dict`` of further measurements of
        the trained model (e.g. metrics on a second test split).
      verbose: Keras verbosity of the runs.
      log: a ``print``-like function for one progress line per run.

    Returns:
      The :class:`Results` (all rows, old and new).
    """
    import keras

    import keras_dml as kd
    results = Results(output_dir)
    todo = []
    for config in configs:
        if config.key not in results and config.key not in {c.key for c in todo}:
            todo.append(config)
    log(f"[study] {len(configs)} configurations, {len(todo)} to run "
        f"({len(configs) - len(todo)} already in {results.path})")
    for number, config in enumerate(todo, 1):
        started = time.monotonic()
        row = {"key": config.key, "name": config.name, "seed": config.seed,
               "history": {}, "extra": {}}
        if config.measure is not None:
            # A custom measurement: its changes are its own parameters.
            measured = config.measure(config)
            row.update(loss=measured.get("loss", config.name), dim=measured.get("dim"),
                       params=config.change_dict, recipe=measured.get("recipe"),
                       metrics=_floats(measured["metrics"]),
                       extra=measured.get("extra", {}))
        else:
            recipe = base_recipe.replace(**config.change_dict, seed=config.seed)
            row.update(loss=recipe.loss, dim=recipe.embedding_dim,
                       params=_params(config.change_dict, recipe), recipe=recipe.to_dict())
            run_dir = os.path.join(output_dir, "runs", config.key)
            resume = kd.training.RunPaths(run_dir).interrupted
            if os.path.isdir(run_dir) and not resume:
                shutil.rmtree(run_dir)          # finished but unrecorded: run again
            result = kd.training.run(recipe, data, run_dir, task=task, resume=resume,
                                     export=False, verbose=verbose)
            row["metrics"] = _floats(result.metrics)
            row["history"] = {k: [float(v) for v in vs] for k, vs in result.history.items()}
            if extra is not None:
                row["extra"] = extra(result, recipe)
            weights = result.paths.get("best_weights")
            del result
            if weights and os.path.exists(weights):
                os.remove(weights)              # 18 MB each; the row is what is kept
        row["seconds"] = round(time.monotonic() - started, 1)
        results.add(row)
        keras.backend.clear_session()
        gc.collect()
        log(f"[study] {number}/{len(todo)} {config.name} (seed {config.seed}, "
            f"{config.key}): {row['seconds']} s; " + ", ".join(
                f"{k}={v:.4g}" for k, v in list(_metric_items(row["metrics"]))[:4]))
    return results


def _metric_items(metrics):
    skip = ("num_queries", "embedding_dim", "epochs", "train_seconds_total")
    return ((k, v) for k, v in metrics.items() if k not in skip)


def _params(changes, recipe):
    params = {k: v for k, v in changes.items() if k != "loss_kwargs"}
    params.update(recipe.loss_arguments())
    return params


def rows_of(results, configs):
    """``{name: [row per seed]}`` for ``configs`` (in their order), from the
    rows present."""
    out = {}
    for config in configs:
        row = results.get(config)
        out.setdefault(config.name, [])
        if row is not None and row not in out[config.name]:
            out[config.name].append(row)
    return out


# -------------------------------------------------------------- statistics
def mean_std(values):
    """(mean, sample std (0 for one value), n) of the finite values."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if values.size == 0:
        return math.nan, math.nan, 0
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std, int(values.size)


def metric_values(rows, metric, where="metrics"):
    """The value of ``metric`` in each row (``where`` = "metrics" or a key
    path into "extra", e.g. "extra.unseen")."""
    out = []
    for row in rows:
        d = row
        for part in where.split("."):
            d = d.get(part, {}) if isinstance(d, dict) else {}
        out.append(d.get(metric) if isinstance(d, dict) else None)
    return out


def fmt(mean, std, n, scale=1.0, digits=1):
    """``mean ± std``; a single value without a std (n = 1 has none)."""
    if n == 0 or not np.isfinite(mean):
        return "–"
    if n == 1:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def run_meta(results, started, **fields):
    """The report's meta: rows, wall time summed over the invocations that
    wrote a report, and the sum of the rows' own times."""
    rows = list(results.rows.values())
    return {**fields, "runs": len(rows),
            "seconds": results.earlier_seconds + time.monotonic() - started,
            "invocations": results.earlier_invocations + 1,
            "row_seconds": sum(r.get("seconds", 0) for r in rows)}


def overlaps(a, b):
    """Whether mean ± std intervals of two (mean, std, n) overlap."""
    return abs(a[0] - b[0]) <= a[1] + b[1]


def verdict(ours, theirs, theirs_exact=False):
    """A claim "ours > theirs" on (mean, std, n) of seeds: "reproduced",
    "not reproduced" or "inconclusive" (fewer than 2 seeds, or the mean ± std
    intervals overlap). ``theirs_exact``: ``theirs`` does not depend on the
    seed (e.g. features without training), so its single value counts."""
    if ours[2] < 2 or (theirs[2] < 2 and not theirs_exact):
        return "inconclusive (1 seed)"
    if overlaps(ours, theirs):
        return "inconclusive (± std overlap)"
    return "reproduced" if ours[0] > theirs[0] else "not reproduced"


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metric_table(groups, metrics, where="metrics", scale=100.0, digits=1, labels=None):
    """A markdown table: one row per name in ``groups`` ({name: rows}), one
    column per metric, mean ± std over the rows (seeds)."""
    headers = ["configuration", "n"] + [labels.get(m, m) if labels else m for m in metrics]
    body = []
    for name, rows in groups.items():
        stats = [mean_std(metric_values(rows, m, where)) for m in metrics]
        n = max((s[2] for s in stats), default=0)
        sc = scale if not callable(scale) else None
        body.append([name, n] + [fmt(*s, scale=(scale(m) if sc is None else sc),
                                     digits=digits) for s, m in zip(stats, metrics)])
    return markdown_table(headers, body)


# ------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(path, curves, xlabel="epoch", ylabel="", title=""):
    """Mean curves with ± std bands: ``curves`` = {label: [list per seed]}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.xaxis.get_major_locator().set_params(integer=True)   # epochs
    for label, runs in curves.items():
        runs = [r for r in runs if len(r)]
        if not runs:
            continue
        length = min(len(r) for r in runs)
        arr = np.asarray([r[:length] for r in runs], float)
        x = np.arange(1, length + 1)
        mean = arr.mean(0)
        ax.plot(x, mean, marker="o", label=label)
        if len(arr) > 1:
            std = arr.std(0, ddof=1)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    return _finish(plt, fig, ax, path, xlabel, ylabel, title)


def _finish(plt, fig, ax, path, xlabel, ylabel, title):
    """Axis labels, grid and legend, then save ``path`` and close the figure."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_lines(path, xs, series, xlabel="", ylabel="", title="", logx=True):
    """``series`` = {label: [(mean, std, n) per x]}: error-bar lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, stats in series.items():
        m = np.array([s[0] for s in stats], float)
        e = np.array([s[1] for s in stats], float)
        ax.errorbar(xs, m, yerr=e, marker="o", capsize=3, label=label)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
    return _finish(plt, fig, ax, path, xlabel, ylabel, title)


def plot_heatmap(path, values, row_labels, col_labels, xlabel="", ylabel="", title=""):
    """A heat map of ``values`` [rows, cols] (NaN: not run), annotated."""
    plt = _pyplot()
    values = np.asarray(values, float)
    fig, ax = plt.subplots(figsize=(1.2 * len(col_labels) + 2.5, 0.8 * len(row_labels) + 2))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels([str(c) for c in col_labels])
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels([str(r) for r in row_labels])
    finite = values[np.isfinite(values)]
    mid = finite.mean() if finite.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center",
                        color="white" if values[i, j] < mid else "black", fontsize=9)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------- command line
def parse_args(argv, description, add_arguments=None):
    """``--output_dir`` (required), ``--quick``; hidden ``--smoke`` (a tiny
    configuration for the test suite) and ``--seeds`` (override);
    ``add_arguments(parser)`` adds a study's own."""
    parser = argparse.ArgumentParser(description=description)
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--output_dir", required=True,
                        help="Study directory: results.json, results.md, PNGs, runs/. "
                             "Re-running with the same directory resumes.")
    parser.add_argument("--quick", action="store_true",
                        help="Few seeds, tiny budgets, small images (< 15 min on 2 cores).")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, default=None,
                        help="Seeds per configuration of the main table (default: by mode).")
    parser.add_argument("--verbose", type=int, default=0, help="Keras verbosity of the runs.")
    args = parser.parse_args(argv)
    if args.quick and args.smoke:
        parser.error("--quick and --smoke are exclusive.")
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be >= 1.")
    return args


def quiet_tensorflow():
    """No retracing warnings from the many small runs of a study."""
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")


def write_report(output_dir, title, sections, meta):
    """``results.md``: a title, what ran (mode, time), then the sections
    (each markdown text)."""
    lines = [f"# {title}", "",
             f"Mode `{meta['mode']}`; {meta['runs']} rows; wall time {meta['seconds']:.0f} s "
             f"over {meta.get('invocations', 1)} invocation(s) (sum over all rows "
             f"{meta['row_seconds']:.0f} s). Mean ± sample std over seeds (n = seeds; "
             "a single value where n = 1).", ""]
    for section in sections:
        lines += [section, ""]
    path = os.path.join(output_dir, REPORT_FILE)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
