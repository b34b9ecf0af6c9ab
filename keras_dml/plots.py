"""PNG figures: Recall@K learning curves and qualitative retrieval grids.

Uses matplotlib's Agg canvas directly (no pyplot, no change of the global
backend), so it works headless and does not disturb a notebook.

    kd.plots.recall_curve(history, "recall.png")
    idx = kd.evaluation.top_k_neighbours(query_emb, gallery_emb, k=5)
    kd.plots.retrieval_grid(q_images, g_images, q_labels, g_labels, idx, "grid.png")
"""

import re

import numpy as np

__all__ = ["recall_curve", "retrieval_grid",
           "QUERY_COLOUR", "CORRECT_COLOUR", "WRONG_COLOUR", "NEUTRAL_COLOUR"]

QUERY_COLOUR = (0.20, 0.40, 0.90)
CORRECT_COLOUR = (0.10, 0.70, 0.10)
WRONG_COLOUR = (0.85, 0.10, 0.10)
# Neighbours of a query whose class is unknown (``keras-dml search``).
NEUTRAL_COLOUR = (0.60, 0.60, 0.60)

_RECALL_KEY = re.compile(r"^(.*?)recall@(\d+)$")
# Metric families -> axis names; fractions are drawn in percent, distances
# as they are.
_FRACTIONS = (("recall@", "recall"), ("map@r", "MAP@R"), ("r_precision", "R-precision"),
              ("ndcg@", "nDCG"), ("nmi", "NMI"))
_DISTANCES = (("mean_label_distance@", "mean label distance"),)


def _family(key, families):
    for start, name in families:
        if re.search(rf"(^|_){re.escape(start)}", key) and (
                start.endswith("@") or key.endswith(start)):
            return name
    return None


def _axis(keys):
    """(y-axis label, scale) for ``keys``: "recall (%)" only for recalls."""
    fractions = [_family(k, _FRACTIONS) for k in keys]
    distances = [_family(k, _DISTANCES) for k in keys]
    if all(f is not None for f in fractions):
        names = list(dict.fromkeys(fractions))
        return ", ".join(names) + " (%)", 100.0
    if all(d is not None for d in distances):
        return "mean label distance", 1.0
    if any(f is None and d is None for f, d in zip(fractions, distances)):
        return "value", 1.0
    raise ValueError("recall_curve draws fractions (recall, MAP@R, nDCG, ...) and "
                     f"label distances on separate figures; got keys {keys}.")


def _history_dict(history_or_dict):
    """(dict of lists, epochs or None) from a History, a callback or a dict."""
    epochs = None
    if hasattr(history_or_dict, "history") and isinstance(history_or_dict.history, dict):
        data = history_or_dict.history
        epochs = getattr(history_or_dict, "epoch", None)
    elif isinstance(history_or_dict, dict):
        data = history_or_dict
    else:
        raise TypeError("recall_curve takes a keras History, a retrieval "
                        "callback or a dict of metric lists; got "
                        f"{type(history_or_dict).__name__}.")
    if epochs is None and "epoch" in data:
        epochs = data["epoch"]
    return data, epochs


def recall_curve(history_or_dict, path, keys=None, title="Recall@K",
                 figsize=(6.0, 4.0), dpi=100):
    """Plot Recall@K (or other retrieval metrics) per epoch and save a PNG
    of ``figsize * dpi`` pixels.

    The y axis says what is drawn: "recall (%)" for Recall@K keys only,
    e.g. "recall, MAP@R, R-precision (%)" when ``keys`` add those, and
    label distances unscaled (they cannot share an axis with fractions).

    Args:
        history_or_dict: ``model.fit``'s History, a ``RetrievalCallback``
            (its ``history`` records the evaluated epochs, right for
            ``every`` > 1) or a dict ``{"val_recall@1": [...], ...}`` (with an
            optional 0-based ``"epoch"`` list).
        path: output PNG path.
        keys: the keys to plot (default: every "...recall@K" key, by K):
            fractions (recall@K, map@r, r_precision, ndcg@K, nmi) or
            mean_label_distance@K.
        title, figsize, dpi: figure settings.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    data, epochs = _history_dict(history_or_dict)
    if keys is None:
        found = [(int(m.group(2)), m.group(1), k) for k in data
                 for m in [_RECALL_KEY.match(k)] if m]
        keys = [k for _, _, k in sorted(found)]
    if not keys:
        raise ValueError("no 'recall@K' keys to plot; got keys "
                         f"{sorted(data)}.")
    ylabel, scale = _axis(keys)
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xlabel = "epoch"
    for key in keys:
        values = np.asarray(data[key], np.float64)
        if epochs is not None and len(epochs) == len(values):
            x = np.asarray(epochs) + 1
        else:
            x = np.arange(1, len(values) + 1)
            if epochs is not None:   # a History of a callback with every > 1
                xlabel = "evaluation"
        ax.plot(x, scale * values, marker="o", label=key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _to_rgb(image):
    """An image of any usual layout and range -> float RGB in [0, 1]."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"images must be [H, W], [H, W, 1], [H, W, 3] or "
                         f"[H, W, 4]; got shape {img.shape}.")
    img = img[..., :3]
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    img = img.astype(np.float64)
    if not np.all(np.isfinite(img)):
        raise ValueError("an image contains NaN or infinite values.")
    lo, hi = img.min(), img.max()
    if lo >= 0.0 and hi <= 1.0:
        return img
    # Any other range (0-255 floats, 0-16 digits, mean-subtracted inputs):
    # stretch this image's own range to [0, 1].
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _fit(image, size):
    """Nearest-neighbour resize into a size x size white square, aspect kept."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rows = np.minimum((np.arange(nh) + 0.5) / scale, h - 1).astype(int)
    cols = np.minimum((np.arange(nw) + 0.5) / scale, w - 1).astype(int)
    out = np.ones((size, size, 3))
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = image[rows][:, cols]
    return out


def retrieval_grid(query_images, gallery_images, query_labels, gallery_labels,
                   neighbour_indices, path, correct=None, cell_size=96,
                   border=4, max_queries=None, unlabelled=False):
    """A PNG grid of retrievals: each row a query and then its top-K results.

    The query has a blue border; each retrieval a green border if it is of the
    query's class (``gallery_labels[j] == query_labels[i]``, or ``correct[i, r]``
    when given, e.g. a threshold on a continuous label distance) and a red one
    otherwise, as in the papers' qualitative figures.

    Layout (pixels): every tile is ``t = cell_size + 2 * border`` square, tiles
    are ``border`` apart with a ``border`` margin, and the query column is
    followed by an extra ``2 * border`` gap, so for R rows and K neighbours

        height = R * t + (R + 1) * border
        width  = (K + 1) * t + (K + 2) * border + 2 * border

    Args:
        query_images, gallery_images: arrays [N, H, W(, C)] or lists of images
            (uint8; floats in [0, 1] as they are; floats in any other range
            are min-max scaled per image).
            For self-retrieval pass the same images twice.
        query_labels, gallery_labels: labels (None if ``correct`` is given).
        neighbour_indices: int [Nq, K] gallery indices, best first (see
            ``top_k_neighbours``).
        path: output PNG path.
        correct: optional bool [Nq, K] overriding the label comparison.
        cell_size, border: tile geometry in pixels.
        max_queries: plot only the first rows.
        unlabelled: the queries' classes are unknown (labels and
            ``correct`` are ignored): every retrieval gets a grey border.

    Returns:
        ``path``.
    """
    import matplotlib.image

    idx = np.asarray(neighbour_indices)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"neighbour_indices must be an int [Nq, K] array; got "
                         f"{idx.dtype} {idx.shape}.")
    rows = idx.shape[0] if max_queries is None else min(int(max_queries), idx.shape[0])
    k = idx.shape[1]
    if rows < 1 or k < 1:
        raise ValueError("nothing to plot: no queries or no neighbours.")
    if len(query_images) < rows:
        raise ValueError(f"{rows} rows of neighbours but {len(query_images)} "
                         "query images.")
    if idx.min() < 0 or idx.max() >= len(gallery_images):
        raise ValueError("neighbour_indices point outside the gallery images.")
    if unlabelled:
        correct = None
    elif correct is None:
        if query_labels is None or gallery_labels is None:
            raise ValueError("give query_labels and gallery_labels, or correct.")
        ql = np.asarray(query_labels).reshape(len(query_labels), -1)
        gl = np.asarray(gallery_labels).reshape(len(gallery_labels), -1)
        correct = np.all(gl[idx[:rows]] == ql[:rows, None, :], axis=-1)
    else:
        correct = np.asarray(correct, bool)
        if correct.shape[0] < rows or correct.shape[1] != k:
            raise ValueError(f"correct must have shape [Nq, {k}]; got {correct.shape}.")

    border = int(border)
    cell = int(cell_size)
    tile = cell + 2 * border
    height = rows * tile + (rows + 1) * border
    width = (k + 1) * tile + (k + 2) * border + 2 * border
    grid = np.ones((height, width, 3))

    def put(r, c, image, colour):
        y0 = border + r * (tile + border)
        x0 = border + c * (tile + border) + (2 * border if c > 0 else 0)
        grid[y0:y0 + tile, x0:x0 + tile] = colour
        grid[y0 + border:y0 + border + cell,
             x0 + border:x0 + border + cell] = _fit(_to_rgb(image), cell)

    for r in range(rows):
        put(r, 0, query_images[r], QUERY_COLOUR)
        for c in range(k):
            colour = NEUTRAL_COLOUR if correct is None else \
                CORRECT_COLOUR if correct[r, c] else WRONG_COLOUR
            put(r, c + 1, gallery_images[int(idx[r, c])], colour)
    matplotlib.image.imsave(path, np.clip(grid, 0.0, 1.0), format="png")
    return path


def verification_curves(scores, same, path, title="Verification", figsize=(10.0, 4.0),
                        dpi=100, operating_threshold=None):
    """ROC (TAR against FAR, log FAR axis) and precision-recall curves of
    scored pairs or match decisions, side by side in one PNG.

    Args:
        scores: [N] scores (higher = more alike), e.g.
            ``kd.evaluation.verification.pair_scores(emb_a, emb_b)``.
        same: [N] bools, the ground truth.
        path: output PNG path.
        operating_threshold: optional threshold (e.g. a
            ``kd.retrieval.calibrate`` result) marked on both curves.

    Precision at threshold t = TP(t) / (TP(t) + FP(t)), recall = TAR(t);
    the curves are those of ``kd.evaluation.verification.roc``.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from keras_dml.evaluation import verification

    scores = np.asarray(scores, np.float64)
    far, tar, thresholds = verification.roc(scores, same)
    metrics = verification.metrics_from_scores(scores, same)
    positives = int(np.sum(np.asarray(same).reshape(-1).astype(bool)))
    negatives = len(scores) - positives
    tp, fp = tar * positives, far * negatives
    accepted = tp + fp
    precision = np.where(accepted > 0, tp / np.maximum(accepted, 1), 1.0)

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    roc_ax = fig.add_subplot(1, 2, 1)
    floor = 0.5 / max(negatives, 1)     # FAR = 0 drawn at half a false accept
    roc_ax.plot(np.maximum(far, floor), tar, drawstyle="steps-post")
    roc_ax.set_xscale("log")
    roc_ax.set_xlim(floor, 1.0)
    roc_ax.set_ylim(0.0, 1.01)
    roc_ax.set_xlabel("false accept rate (FAR)")
    roc_ax.set_ylabel("true accept rate (TAR)")
    roc_ax.set_title(f"ROC, AUC {metrics['roc_auc']:.4f}, EER {metrics['eer']:.4f}")
    roc_ax.grid(True, which="both", alpha=0.3)
    pr_ax = fig.add_subplot(1, 2, 2)
    pr_ax.plot(tar[1:], precision[1:])
    pr_ax.set_xlim(0.0, 1.0)
    pr_ax.set_ylim(0.0, 1.01)
    pr_ax.set_xlabel("recall")
    pr_ax.set_ylabel("precision")
    pr_ax.set_title("precision-recall")
    pr_ax.grid(True, alpha=0.3)
    if operating_threshold is not None:
        at = int(np.searchsorted(-thresholds, -float(operating_threshold), "right")) - 1
        roc_ax.plot([max(far[at], floor)], [tar[at]], "o", color=WRONG_COLOUR,
                    label=f"t = {float(operating_threshold):.4g}")
        pr_ax.plot([tar[at]], [precision[at]], "o", color=WRONG_COLOUR)
        roc_ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    return path


__all__ += ["verification_curves"]
