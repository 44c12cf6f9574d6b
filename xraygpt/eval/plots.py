"""Pictures of evaluation results: ``metrics.png`` beside ``metrics.json``.

Headless (matplotlib's Agg backend): no display is needed. The figure shows
each observation's F1 (14 CheXpert observations, uncertain = 0: the
``clinical`` block's definition) for the model and every baseline, with the
bootstrap 95 % intervals as error bars when ``metrics.json`` has them, and
the headline NLG metrics beside it (CIDEr, on another scale, as text).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xraygpt.common.figures import pyplot, save_figure

PER_OBSERVATION_VARIANT = "ce14_uncertain0"
# CIDEr (0 to 10) would squash the others (0 to 1): it is written under the bars.
NLG_SHOWN = ("ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU-4", "METEOR")


def _systems(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [("model", metrics), *(metrics.get("baselines") or {}).items()]


def _error(value: float, interval: list[float] | None) -> tuple[float, float]:
    if not interval:
        return 0.0, 0.0
    return max(value - interval[0], 0.0), max(interval[1] - value, 0.0)


def plot_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Per-observation F1 (with intervals) and headline NLG metrics of every system."""
    plt = pyplot()
    systems = _systems(metrics)
    observations = list(metrics["clinical"]["per_observation"])
    nlg = [m for m in NLG_SHOWN if all(m in s["nlg"] for _, s in systems)]
    fig, (ax_ce, ax_nlg) = plt.subplots(
        1, 2, figsize=(13, 7), gridspec_kw={"width_ratios": [3, 2]}, constrained_layout=True
    )
    height = 0.8 / len(systems)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, system) in enumerate(systems):
        per_obs = system["clinical"]["per_observation"]
        intervals = (system.get("ci_per_observation") or {}).get(PER_OBSERVATION_VARIANT, {})
        values = [per_obs[o]["f1"] for o in observations]
        errors = [_error(v, intervals.get(o)) for v, o in zip(values, observations, strict=True)]
        positions = [i + (k - (len(systems) - 1) / 2) * height for i in range(len(observations))]
        ax_ce.barh(
            positions,
            values,
            height=height,
            xerr=list(zip(*errors, strict=True)) if intervals else None,
            capsize=2,
            color=colors[k % len(colors)],
            label=name,
        )
        nlg_values = [system["nlg"][m] for m in nlg]
        nlg_errors = [_error(system["nlg"][m], (system.get("ci") or {}).get(m)) for m in nlg]
        ax_nlg.bar(
            [i + (k - (len(systems) - 1) / 2) * height for i in range(len(nlg))],
            nlg_values,
            width=height,
            yerr=list(zip(*nlg_errors, strict=True)) if system.get("ci") else None,
            capsize=2,
            color=colors[k % len(colors)],
            label=name,
        )
    support = [metrics["clinical"]["per_observation"][o]["support"] for o in observations]
    ax_ce.set_yticks(
        range(len(observations)),
        [f"{o} (n={s})" for o, s in zip(observations, support, strict=True)],
    )
    ax_ce.invert_yaxis()
    ax_ce.set_xlim(0, 1.05)
    ax_ce.set_xlabel("F1 (labeler; uncertain = 0)")
    ax_ce.grid(axis="x", alpha=0.3)
    micro = metrics["clinical"]["micro"]["f1"]
    macro = metrics["clinical"]["macro"]["f1"]
    ax_ce.set_title(
        f"Clinical efficacy per observation — model micro-F1 {micro:.3f}, macro {macro:.3f}"
    )
    ax_nlg.set_xticks(range(len(nlg)), nlg, rotation=30, ha="right")
    ax_nlg.set_title("Language metrics")
    if all("CIDEr" in s["nlg"] for _, s in systems):
        from xraygpt.eval.metrics.bootstrap import format_ci

        cider = [
            f"{name} {format_ci(s['nlg']['CIDEr'], (s.get('ci') or {}).get('CIDEr'))}"
            for name, s in systems
        ]
        ax_nlg.set_xlabel("CIDEr: " + "; ".join(cider), fontsize=8, wrap=True)
    ax_nlg.grid(axis="y", alpha=0.3)
    # one legend for both panels, under them, where it hides no bar
    handles, labels = ax_ce.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(systems))
    note = (
        f"n = {metrics['n']} reports; bars: 95 % bootstrap interval "
        f"({metrics['bootstrap']['resamples']} resamples)"
        if "bootstrap" in metrics
        else f"n = {metrics['n']} reports; no intervals (bootstrap off)"
    )
    fig.suptitle(note, fontsize=9)
    out = save_figure(fig, path)
    plt.close(fig)
    return out
