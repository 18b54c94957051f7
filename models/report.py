"""An HTML model report with inline SVG plots (no plotting library needed, opens in any browser offline).

Sections: headline metrics with their denominators (users evaluated, users without a list, users kept in
train only or cold), metrics vs k, ALS vs popularity, popularity bias of the recommendations, catalogue
coverage, and the tuning results (every configuration's mean and spread over folds). Input: the dict that
:mod:`models.evaluation` returns (the same JSON jobs.evaluate writes).
"""
from __future__ import annotations

import html
import json
from pathlib import Path

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
W, H, PAD_L, PAD_B, PAD_T, PAD_R = 460, 270, 52, 38, 44, 12


def _esc(x) -> str:
    return html.escape(str(x))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return _esc(v)


def _axes(title: str, y_max: float, y_label: str, y_min: float = 0.0) -> list[str]:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
             f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{_esc(title)}</text>',
             f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#333"/>',
             f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#333"/>',
             f'<text x="12" y="{(H - PAD_B + PAD_T) / 2}" transform="rotate(-90 12 {(H - PAD_B + PAD_T) / 2})" '
             f'text-anchor="middle">{_esc(y_label)}</text>']
    for i in range(5):
        v = y_min + (y_max - y_min) * i / 4
        y = _y(v, y_max, y_min)
        parts.append(f'<line x1="{PAD_L - 3}" y1="{y}" x2="{W - PAD_R}" y2="{y}" stroke="#ddd"/>'
                     f'<text x="{PAD_L - 5}" y="{y + 4}" text-anchor="end">{v:.3g}</text>')
    return parts


def _y(v: float, y_max: float, y_min: float = 0.0) -> float:
    span = y_max - y_min
    return H - PAD_B - ((v - y_min) / span if span else 0) * (H - PAD_B - PAD_T)


def _legend(names: list[str]) -> list[str]:
    """One row under the title, each entry as wide as its label."""
    parts, x = [], PAD_L
    for i, name in enumerate(names):
        parts.append(f'<rect x="{x}" y="22" width="10" height="10" fill="{PALETTE[i % 6]}"/>'
                     f'<text x="{x + 14}" y="31">{_esc(name)}</text>')
        x += 14 + 6.5 * len(str(name)) + 14
    return parts


def line_chart(title: str, xs: list, series: dict[str, list[float]], y_label: str = "") -> str:
    y_max = max([v for vals in series.values() for v in vals if v is not None] + [1e-9]) * 1.1
    parts = _axes(title, y_max, y_label)
    n = len(xs)
    x_at = lambda i: PAD_L + 20 + (W - PAD_L - PAD_R - 40) * (i / max(1, n - 1))  # noqa: E731
    for i, x in enumerate(xs):
        parts.append(f'<text x="{x_at(i)}" y="{H - PAD_B + 14}" text-anchor="middle">{_esc(x)}</text>')
    for s, (name, vals) in enumerate(series.items()):
        pts = " ".join(f"{x_at(i)},{_y(v, y_max)}" for i, v in enumerate(vals))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{PALETTE[s % 6]}" stroke-width="2"/>')
        parts += [f'<circle cx="{x_at(i)}" cy="{_y(v, y_max)}" r="3" fill="{PALETTE[s % 6]}"/>' for i, v in enumerate(vals)]
    parts += _legend(list(series))
    parts.append(f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle">k</text></svg>')
    return "".join(parts)


def bar_chart(title: str, groups: list[str], series: dict[str, list[float]], y_label: str = "",
              errors: dict[str, list[float]] | None = None, zoom: bool = False) -> str:
    """Grouped bars; ``zoom`` starts the axis near the smallest value (for close numbers such as RMSEs)."""
    values = [v for vals in series.values() for v in vals]
    lo, hi = min(values + [0.0]), max(values + [1e-9])
    if zoom and values:
        spread = (max(values) - min(values)) or abs(max(values)) * 0.05 or 1.0
        lo = max(0.0, min(values) - spread)
        hi = max(values) + spread
    else:
        lo, hi = 0.0, hi * 1.15
    y_max, y_min = hi, lo
    parts = _axes(title, y_max, y_label, y_min)
    slot = (W - PAD_L - PAD_R) / max(1, len(groups))
    bar = slot * 0.8 / max(1, len(series))
    for g, group in enumerate(groups):
        x0 = PAD_L + g * slot + slot * 0.1
        parts.append(f'<text x="{x0 + slot * 0.4}" y="{H - PAD_B + 14}" text-anchor="middle">{_esc(group)}</text>')
        for s, (name, vals) in enumerate(series.items()):
            v = vals[g]
            x, y = x0 + s * bar, _y(v, y_max, y_min)
            parts.append(f'<rect x="{x}" y="{y}" width="{bar - 1}" height="{H - PAD_B - y}" fill="{PALETTE[s % 6]}">'
                         f'<title>{_esc(name)} {_esc(group)}: {v:.4g}</title></rect>')
            if errors and name in errors:
                e = errors[name][g]
                parts.append(f'<line x1="{x + bar / 2}" x2="{x + bar / 2}" y1="{_y(v - e, y_max, y_min)}" '
                             f'y2="{_y(v + e, y_max, y_min)}" stroke="#000"/>')
    parts += _legend(list(series))
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tuning_section(tuning: dict) -> str:
    configs = tuning["configs"]
    labels = [f"#{c['config_id']}" for c in configs]
    chart = bar_chart(f"tuning: {tuning['metric']} per configuration ({tuning['folds']}-fold CV, mean ± sd)", labels,
                      {tuning["metric"]: [c["mean"] for c in configs]}, tuning["metric"],
                      errors={tuning["metric"]: [c["std"] for c in configs]}, zoom=True)
    best = tuning["best_config_id"]
    rows = [{**c, "best": "◀ best" if c["config_id"] == best else ""} for c in configs]
    order = "higher" if tuning["higher_is_better"] else "lower"
    return (f"<h2>Tuning</h2><p>Selection metric <b>{_esc(tuning['metric'])}</b> ({order} is better), "
            f"{tuning['folds']} folds per configuration, {tuning.get('seconds', '?')} s in all. Fold sets: "
            f"{_esc(json.dumps(tuning.get('fold_stats', {})))}.</p>{chart}"
            + _table(rows, ["config_id", "rank", "reg_param", "alpha", "max_iter", "mean", "std", "fit_seconds", "best"]))


def implicit_report_html(report: dict, *, title: str) -> str:
    k = report["k"]
    models = [m for m in ("als", "popularity") if m in report]
    keys = [f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"map@{k}", f"hit_rate@{k}", "coverage"]
    split = report.get("split", {})
    rows = [{"model": m, **{key: report[m][key] for key in keys}, "users evaluated": report[m]["users_evaluated"],
             "users without a list": report[m]["users_without_recs"],
             "short lists": report[m]["users_with_short_lists"]} for m in models]
    parts = [f"<h1>{_esc(title)}</h1>",
             f"<p>Split <b>{_esc(split.get('kind'))}</b>, test fraction {_esc(split.get('test_fraction'))}, seed "
             f"{_esc(split.get('seed'))}: {_fmt(split.get('train_rows', 0))} training pairs, "
             f"{_fmt(split.get('test_rows', 0))} held-out pairs (all relevant). Users: "
             f"{_fmt(split.get('users', 0))} in the data, {_fmt(split.get('test_users', 0))} with held-out pairs, "
             f"{_fmt(split.get('train_only_users') or 0)} with too few pairs (kept in train only), "
             f"{_fmt(split.get('cold_users') or 0)} cold (no training pair; dropped from test).</p>",
             "<p>Metrics average over users with at least one held-out pair; a user without a list scores 0. "
             "precision@k divides by k, recall@k by the user's held-out pairs, MAP@k by min(held-out, k), nDCG "
             "uses binary gains. Coverage = distinct recommended items / items in training. Seen (training) "
             "items are excluded by the production top-N code.</p>",
             _table(rows, ["model", *keys, "users evaluated", "users without a list", "short lists"])]
    ks = sorted(int(x) for x in report["als"]["metrics_at_k"])
    charts = []
    for metric in ("ndcg", "precision", "recall", "map"):
        charts.append(line_chart(f"{metric}@k", ks, {m: [report[m]["metrics_at_k"][str(x)][f"{metric}@{x}"] for x in ks]
                                                     for m in models}, metric))
    parts.append("<h2>Metrics vs k</h2>" + "".join(charts))
    parts.append("<h2>ALS vs popularity</h2>" + bar_chart(
        f"at k = {k}", [key.split("@")[0] for key in keys[:5]], {m: [report[m][key] for key in keys[:5]] for m in models}))
    bias = {m: report[m]["popularity_bias"] for m in models}
    b0 = bias[models[0]]
    deciles = [f"{i + 1}" for i in range(b0["buckets"])]
    series = {"training interactions": b0["training_share"], **{m: bias[m]["recommendation_share"] for m in models}}
    parts.append("<h2>Popularity bias</h2><p>Items are cut into equal-sized groups by training popularity (1 = most "
                 "popular). Bars: share of the top-k recommendations (and of training interactions) per group. "
                 "Mean popularity percentile of recommended items: "
                 + ", ".join(f"{m} {bias[m]['mean_popularity_percentile']:.3f}" for m in models) + ".</p>"
                 + bar_chart("share by item popularity group", deciles, series, "share"))
    parts.append("<h2>Catalogue coverage</h2>" + bar_chart(
        "distinct items recommended / catalogue", [f"k={x}" for x in ks],
        {m: [report[m]["metrics_at_k"][str(x)]["coverage"] for x in ks] for m in models}, "coverage"))
    if "tuning" in report:
        parts.append(_tuning_section(report["tuning"]))
    parts.append(f"<h2>ALS parameters</h2><pre>{_esc(json.dumps(report['als'].get('params', {}), indent=2))}</pre>")
    return _page(title, parts)


def explicit_report_html(report: dict, *, title: str) -> str:
    parts = [f"<h1>{_esc(title)}</h1>"]
    if "cv" in report:
        cv = report["cv"]
        folds = [f"fold {r['fold']}" for r in cv["per_fold"]]
        parts += [f"<p>{cv['folds']}-fold per-user CV over all pairs; ALS and the bias-only baseline (global mean + "
                  f"user and item biases) are scored on the same rows. Test rows without a prediction (items unseen "
                  f"in the fold's training part): {cv['als']['rows_without_prediction']:,}, counted, not averaged.</p>",
                  _table([{"model": m, "rmse": cv[m]["rmse"], "rmse sd": cv[m]["rmse_std"], "mae": cv[m]["mae"]}
                          for m in ("als", "bias")], ["model", "rmse", "rmse sd", "mae"]),
                  bar_chart("RMSE per fold", folds, {m: [r[m]["rmse"] for r in cv["per_fold"]] for m in ("als", "bias")},
                            "rmse", zoom=True)]
    if "holdout" in report:
        h = report["holdout"]
        split = h.get("split", {})
        parts.append(f"<h2>Hold-out</h2><p>Split {_esc(split.get('kind', ''))}, test fraction "
                     f"{_esc(split.get('test_fraction', ''))}; never seen by tuning. Rows scored: "
                     f"{h['als']['rows']:,}; without a prediction (cold items): {h['als']['rows_without_prediction']:,}."
                     f"</p>" + _table([{"model": m, "rmse": h[m]["rmse"], "mae": h[m]["mae"]} for m in ("als", "bias")],
                                      ["model", "rmse", "mae"])
                     + bar_chart("hold-out error", ["rmse", "mae"],
                                 {m: [h[m]["rmse"], h[m]["mae"]] for m in ("als", "bias")}, zoom=True))
    if "tuning" in report:
        parts.append(_tuning_section(report["tuning"]))
    parts.append(f"<h2>ALS parameters</h2><pre>{_esc(json.dumps(report['als'].get('params', {}), indent=2))}</pre>")
    return _page(title, parts)


def _page(title: str, parts: list[str]) -> str:
    style = ("body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222} svg{margin:4px;border:1px solid #eee}"
             " table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             " th{background:#f4f4f4}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def report_html(report: dict, *, title: str = "Offline evaluation") -> str:
    if report.get("protocol") == "explicit":
        return explicit_report_html(report, title=title)
    return implicit_report_html(report, title=title)


def write_evaluation_report(report: dict, path: str, *, title: str = "Offline evaluation") -> str:
    """Write the HTML report to a local path; returns the HTML."""
    text = report_html(report, title=title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
    return text
