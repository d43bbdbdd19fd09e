"""The report's plots: one legend per figure, outside every panel (it covers no data), naming
every labelled line or bar of every panel."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from core.report.plots import gradient_figure, robust_accuracy_figure
from core.report.schema import Report


def _check_one_legend_outside_the_panels(figure: Figure) -> None:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    assert [axis.get_legend() for axis in figure.axes] == [None] * len(figure.axes)
    [legend] = figure.legends
    box = legend.get_window_extent(renderer)
    for axis in figure.axes:
        assert not box.overlaps(axis.get_window_extent(renderer)), "the legend covers a panel"
    named = {text.get_text() for text in legend.get_texts()}
    for axis in figure.axes:
        _, labels = axis.get_legend_handles_labels()
        assert set(labels) <= named  # every panel's data is in the one legend
    assert len(named) == len(legend.get_texts())  # each once


def test_the_robust_accuracy_figures_have_one_legend_that_covers_no_data(
    audited_run: tuple[Report, Path],
) -> None:
    evaluation = audited_run[0].evaluation
    assert evaluation is not None
    for norm in ("linf", "l2"):
        figure = robust_accuracy_figure(evaluation, norm)
        assert figure is not None
        _check_one_legend_outside_the_panels(figure)
        # The same attack has the same colour on both panels.
        colours = [
            {line.get_label(): line.get_color() for line in axis.get_lines()}
            for axis in figure.axes
        ]
        shared = set(colours[0]) & set(colours[1])
        assert shared and all(colours[0][name] == colours[1][name] for name in shared)


def test_the_gradient_histograms_have_one_legend_that_covers_no_data(
    audited_run: tuple[Report, Path],
) -> None:
    evaluation = audited_run[0].evaluation
    assert evaluation is not None
    figure = gradient_figure(evaluation)
    assert figure is not None
    _check_one_legend_outside_the_panels(figure)
