"""Plots of the robustness audit, as base64 PNG data URIs so the HTML stays one file.

matplotlib with the Agg backend: no display, safe in workers and threads.
"""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from core.audit.schema import Evaluation  # noqa: E402
from core.contract.certification import Certification  # noqa: E402

_ROLES = (("uploaded", "uploaded model"), ("student", "hardened model"))
_PALETTE = [plt.get_cmap("tab10")(index) for index in range(10)]


def _data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure_legend(figure: Figure, fontsize: float = 8, columns: int = 3) -> None:
    """One legend for the whole figure, below its panels where it covers no data: every labelled
    line or bar of every panel, each label once (the panels share colours per label)."""
    entries: dict[str, Artist] = {}
    for axis in figure.axes:
        handles, labels = axis.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, handle)
    if not entries:
        return
    figure.legend(
        list(entries.values()),
        list(entries),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(columns, len(entries)),
        fontsize=fontsize,
        frameon=False,
    )


def robust_accuracy_figure(evaluation: Evaluation, norm: str) -> Figure | None:
    """Robust accuracy vs epsilon at one norm per attack and the per-sample worst case over them
    (thick black), uploaded and hardened model side by side, one colour per attack on both
    panels and one legend below them; None when no attack ran at that norm."""
    label = {"linf": "L-inf ε", "l2": "L2 ε"}[norm]
    names = sorted(
        {a.title for model in evaluation.models.values() for a in model.attacks if a.norm == norm}
    )
    colours = {name: _PALETTE[index % len(_PALETTE)] for index, name in enumerate(names)}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    drawn = False
    for axis, (role, title) in zip(axes, _ROLES, strict=True):
        model = evaluation.models.get(role)
        if model is None:
            continue
        for summary in model.attacks:
            points = sorted(
                (p.epsilon, p.robust_accuracy)
                for p in summary.points
                if summary.norm == norm and p.epsilon is not None
            )
            if not points:
                continue
            drawn = True
            axis.plot(
                [e for e, _ in points],
                [100 * r for _, r in points],
                "-" if summary.sees_through_masking else "--",
                marker="o",
                color=colours[summary.title],
                label=summary.title,
            )
        worst = sorted((w.epsilon, w.robust_accuracy) for w in model.worst_case if w.norm == norm)
        if worst:
            axis.plot(
                [e for e, _ in worst],
                [100 * r for _, r in worst],
                color="black",
                linewidth=2.5,
                marker="s",
                label="worst case per sample",
            )
        axis.set_title(
            f"{title} (clean {100 * model.clean_accuracy:.1f}% on the "
            f"{evaluation.samples} attacked samples)",
            fontsize=10,
        )
        axis.set_xlabel(label)
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("robust accuracy (%)")
    if not drawn:
        plt.close(figure)
        return None
    figure_legend(figure)
    return figure


def robust_accuracy_plots(evaluation: Evaluation) -> dict[str, str]:
    """Per norm, :func:`robust_accuracy_figure` as a data URI."""
    plots = {}
    for norm in ("linf", "l2"):
        figure = robust_accuracy_figure(evaluation, norm)
        if figure is not None:
            plots[norm] = _data_uri(figure)
    return plots


def gradient_histograms(evaluation: Evaluation) -> str | None:
    """Histograms of log10 L1 input-gradient norms (softmax and logit margin), both models."""
    figure = gradient_figure(evaluation)
    return None if figure is None else _data_uri(figure)


def gradient_figure(evaluation: Evaluation) -> Figure | None:
    """The figure of :func:`gradient_histograms`, with one legend below both panels."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    drawn = False
    for axis, (field, title) in zip(
        axes,
        (("softmax_l1", "softmax of the true class (paper)"), ("margin_l1", "logit margin")),
        strict=True,
    ):
        # Exact zeros (a saturated softmax in float32) are shown at the 1e-30 floor.
        logs = {
            name: [math.log10(max(v, 1e-30)) for v in getattr(model.gradient, field)]
            for role, name in _ROLES
            if (model := evaluation.models.get(role)) is not None
        }
        everything = [v for values in logs.values() for v in values]
        if not everything:
            continue
        low, high = min(everything), max(everything)
        # Shared bins, so both models' bars have the same width and can be compared.
        bins = [low + (high - low + 1e-9) * i / 40 for i in range(41)]
        for name, values in logs.items():
            if values:
                drawn = True
                axis.hist(values, bins=bins, alpha=0.6, label=name)
        axis.set_title(f"input-gradient L1 norm: {title}", fontsize=10)
        axis.set_xlabel("log10 L1 norm (−30: exactly zero)")
        axis.set_ylabel("samples")
    if not drawn:
        plt.close(figure)
        return None
    figure_legend(figure)
    return figure


def certified_accuracy_plot(certification: Certification, evaluation: Evaluation | None) -> str:
    """:func:`certified_accuracy_figure` as a data URI."""
    return _data_uri(certified_accuracy_figure(certification, evaluation))


def certified_accuracy_figure(
    certification: Certification, evaluation: Evaluation | None
) -> Figure:
    """Certified accuracy of each model's smoothed classifier against L2 radius (solid), beside
    the base network's empirical L2 robust accuracy, the per-sample worst case over the attacks
    (dashed), on one axis: a proof for one classifier and a failed search for the other."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for (role, title), colour in zip(_ROLES, ("tab:blue", "tab:orange"), strict=True):
        model = certification.models.get(role)
        if model is not None:
            axis.plot(
                [0.0, *(c.radius for c in model.certified)],
                [
                    100 * model.smoothed_accuracy,
                    *(100 * c.certified_accuracy for c in model.certified),
                ],
                color=colour,
                marker="o",
                label=f"{title}, smoothed: certified",
            )
        robustness = evaluation.models.get(role) if evaluation is not None else None
        if robustness is not None:
            worst = sorted(
                (w.epsilon, w.robust_accuracy) for w in robustness.worst_case if w.norm == "l2"
            )
            if worst:
                axis.plot(
                    [e for e, _ in worst],
                    [100 * r for _, r in worst],
                    "--",
                    color=colour,
                    marker="s",
                    label=f"{title}, base network: empirical (worst case)",
                )
    axis.set_xlabel("L2 radius / ε")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(-2, 102)
    axis.grid(alpha=0.3)
    figure_legend(figure, fontsize=7, columns=1)
    return figure
