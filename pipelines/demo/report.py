"""The demo's report: what harmonize did to a simulated year, measured against truth.

:func:`write_report` reads the outputs of the pipeline stages (co-registered cube, pair index,
model package, harmonized Landsat) and the simulator's truth, and writes ``report/report.md``
and ``report/report.html`` with:

- the harmonization table: each baseline and the UNet scored against truth on held-out blocks;
- a before/after image comparison (Landsat input | harmonized | Sentinel-2 | truth);
- the gap-filling table: NDVI RMSE against truth for Sentinel-2 alone, + harmonized Landsat and
  + raw Landsat, per method; clear observations gained; same-day NDVI agreement;
- NDVI maps, NDVI time series of fields against their true curves, clear observations per month;
- the training curves and timings.

Every number also goes to ``report/metrics.json`` for machines.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from harmonize.bands import REFLECTANCE_BANDS  # noqa: E402
from harmonize.indices import ndvi  # noqa: E402
from harmonize.plot import plot_clear_observations, plot_ndvi_maps, plot_ndvi_timeseries  # noqa: E402
from pipelines.core.stores import read_index  # noqa: E402
from pipelines.demo.paths import demo_paths, open_cube, open_harmonized  # noqa: E402
from pipelines.evaluation import scores as ev  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["write_report", "markdown_table"]


def markdown_table(df: pd.DataFrame, *, floatfmt: str = "{:.3f}", index_name: str = "") -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (no extra dependency)."""

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else floatfmt.format(v)
        return str(v)

    cols = [index_name] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [fmt(v) for v in row.values]) + " |")
    return "\n".join(lines)


def _rgb(arr: np.ndarray) -> np.ndarray:
    """[bands(blue, green, red …), y, x] reflectance to a displayable RGB image."""
    rgb = np.stack([arr[2], arr[1], arr[0]], axis=-1)
    return np.clip(np.nan_to_num(rgb / 0.25), 0, 1) ** (1 / 1.6)


def _comparison_figure(
    cube: xr.Dataset, harmonized: xr.Dataset, truth: xr.Dataset, index: pd.DataFrame, path: Path
) -> Path | None:
    windows = ev.test_windows(index)
    if windows.empty:
        windows = index
    if windows.empty:
        return None
    r = windows.sort_values(["clear_landsat", "clear_s2"], ascending=False).iloc[0]
    patch = ev._patch_size(index)
    ys, xs = slice(int(r.y0), int(r.y0) + patch), slice(int(r.x0), int(r.x0) + patch)
    lt = np.datetime64(pd.Timestamp(r.landsat_time).to_datetime64(), "ns")
    st = np.datetime64(pd.Timestamp(r.s2_time).to_datetime64(), "ns")
    tr = ev.truth_on_grid(truth, cube).sel(time=ev._day(r.s2_time))

    def stack(ds: xr.Dataset) -> np.ndarray:
        return np.stack([np.asarray(ds[b].isel(y=ys, x=xs).values, np.float32) for b in REFLECTANCE_BANDS])

    panels = {
        f"Landsat input ({pd.Timestamp(lt):%Y-%m-%d})": stack(cube.sel(time=lt)),
        "harmonized (UNet)": stack(harmonized.sel(time=lt)),
        f"Sentinel-2 ({pd.Timestamp(st):%Y-%m-%d})": stack(cube.sel(time=st)),
        "truth": stack(tr),
    }
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4), constrained_layout=True)
    for ax, (title, arr) in zip(axes[0], panels.items()):
        ax.imshow(_rgb(arr))
        ax.set_title(title)
        ax.axis("off")
    for ax, (title, arr) in zip(axes[1], panels.items()):
        nd = (arr[3] - arr[2]) / (arr[3] + arr[2])
        im = ax.imshow(nd, vmin=-0.2, vmax=1.0, cmap="RdYlGn")
        ax.set_title(f"NDVI, {title.split(' (')[0]}")
        ax.axis("off")
    fig.colorbar(im, ax=axes[1].tolist(), shrink=0.8, label="NDVI")
    fig.suptitle("True colour (top) and NDVI (bottom) of one held-out test window")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _field_masks(truth: xr.Dataset, like: xr.Dataset, n: int = 4) -> dict[str, xr.DataArray]:
    """Masks of ``n`` large fields of different crops, on ``like``'s grid."""
    if "field_id" not in truth:
        return {}
    fid = truth["field_id"].reindex(y=like["y"].values, x=like["x"].values, method="nearest").load()
    ids, counts = np.unique(fid.values[np.isfinite(fid.values)] if fid.dtype.kind == "f" else fid.values, return_counts=True)
    crops = truth["field_crop"].load() if "field_crop" in truth else None
    names = str(crops.attrs.get("flag_meanings", "")).split() if crops is not None else []
    codes = list(crops.attrs.get("flag_values", [])) if crops is not None else []
    out: dict[str, xr.DataArray] = {}
    seen: set[str] = set()
    for i in np.argsort(counts)[::-1]:
        fid_i = ids[i]
        if fid_i <= 0:  # 0: not a field
            continue
        crop = "field"
        if crops is not None:
            try:
                code = int(crops.sel({crops.dims[0]: fid_i}).values)
                crop = names[codes.index(code)] if code in codes and names else str(code)
            except (KeyError, IndexError, ValueError):
                crop = "field"
        if crop in seen and len(seen) < n:
            continue
        seen.add(crop)
        out[f"{crop} (field {int(fid_i)})"] = fid == fid_i
        if len(out) >= n:
            break
    return out


def write_report(
    out: str | Path,
    world: Any = None,
    *,
    cube: xr.Dataset | None = None,
    harmonized: xr.Dataset | None = None,
    pair_index: pd.DataFrame | None = None,
    model_dir: str | Path | None = None,
    timings: dict[str, float] | None = None,
    pixel_step: int = 4,
    max_windows: int = 64,
) -> Path:
    """Write the demo report into ``OUT/report``.

    Parameters
    ----------
    out
        The demo's output directory. Missing arguments are found there
        (:func:`pipelines.demo.paths.demo_paths`).
    world
        The simulated :class:`harmonize.world.World` (its truth is the reference).
    cube, harmonized, pair_index, model_dir
        The co-registered cube, the harmonized Landsat cube, the pair index and the model's
        training output folder.
    timings
        Seconds per stage, shown in the report.
    pixel_step
        Spatial subsampling of the per-pixel time-series evaluation.
    max_windows
        Cap on held-out windows scored in the harmonization table.

    Returns
    -------
    pathlib.Path
        ``OUT/report/report.html`` (``report.md`` beside it).
    """
    t0 = time.perf_counter()
    out = Path(out)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paths = demo_paths(out)
    if world is None:
        from harmonize.world import open_world

        world = open_world(paths["world"])
    cube = open_cube(out) if cube is None else cube
    harmonized = open_harmonized(out) if harmonized is None else harmonized
    if pair_index is None:
        pair_index = read_index(paths["pairs"])
    if model_dir is None and paths["model_package"].is_dir():
        model_dir = paths["model_package"]
    if timings is None and paths["timings"].exists():
        timings = json.loads(paths["timings"].read_text())
    truth = world.truth
    metrics: dict[str, Any] = {}
    md: list[str] = ["# harmonize demo report", ""]
    md.append(
        f"A simulated {world.config.size_km:g} km × {world.config.size_km:g} km area, "
        f"{world.config.start} to {world.config.end}: "
        f"{int((cube['sensor'] == 'sentinel-2').sum())} Sentinel-2 and "
        f"{int((cube['sensor'] == 'landsat').sum())} Landsat time steps, searched through a local "
        "STAC API, loaded, co-registered, paired, used to train a UNet, harmonized and fused. "
        "Every figure below is measured against the simulator's noise-free, cloud-free truth."
    )
    md.append("")

    # ---------------------------------------------------------------- harmonization
    log.info("report: scoring harmonization on held-out blocks")
    preset = None
    if model_dir is not None and Path(model_dir, "mlm.json").exists():
        doc = json.loads(Path(model_dir, "mlm.json").read_text())
        preset = doc.get("properties", doc).get("harmonize:preset")
    model_name = f"UNet ({preset})" if preset else "UNet"
    table, details = ev.harmonization_table(
        cube, pair_index, truth, {model_name: harmonized}, max_windows=max_windows
    )
    metrics["harmonization"] = {"table": table.to_dict(orient="index"), **details}
    main_cols = ["PSNR", "SSIM", "SAM (deg)", "NRMSE", "NDVI r"]
    md += [
        "## Harmonization against truth (held-out test blocks)",
        "",
        f"{details['windows']} test windows ({details['pixels']:,} clear pixels), spatially separate "
        "from every training window. PSNR in dB on reflectance (data range 1).",
        "",
        markdown_table(table[main_cols], index_name="method"),
        "",
        "PSNR per band (dB):",
        "",
        markdown_table(table[[f"PSNR {b}" for b in REFLECTANCE_BANDS]].rename(columns=lambda c: c[5:]), index_name="method"),
        "",
    ]
    base = table.loc[[i for i in table.index if "fitted linear" in i][0], "PSNR"]
    gain = table.loc[model_name, "PSNR"] - base
    md.append(f"The model's PSNR gain over resampling + fitted linear bandpass: **{gain:+.2f} dB**.")
    md.append("")
    metrics["harmonization"]["psnr_gain_over_linear_db"] = float(gain)

    fig_path = _comparison_figure(cube, harmonized, truth, pair_index, rep / "comparison.png")
    if fig_path:
        md += ["![before/after](comparison.png)", ""]

    # ---------------------------------------------------------------- time series
    log.info("report: gap-filling NDVI against truth")
    s2 = ev.sensor_part(cube, "sentinel-2")
    landsat = ev.sensor_part(cube, "landsat")
    harm = harmonized
    if "clear" not in harm and "clear" in landsat:
        harm = harm.assign(clear=landsat["clear"].sel(time=harm["time"]))
    observations = ev.ndvi_observations(s2, landsat, harm, pixel_step=pixel_step)
    gtable, filled_all = ev.gapfill_table(observations, truth)
    metrics["gapfill"] = gtable.to_dict(orient="records")
    pivot = gtable.pivot(index="method", columns="inputs", values="NDVI RMSE")
    order = [c for c in ("S2 only", "S2 + harmonized Landsat", "S2 + raw Landsat") if c in set(gtable["inputs"])]
    pivot = pivot[order]
    inner = gtable.pivot(index="method", columns="inputs", values="NDVI RMSE interior")[order]
    best = pivot.min(axis=0)
    ratio = float(best.get("S2 + harmonized Landsat", np.nan) / best.get("S2 only", np.nan))
    best_in = inner.min(axis=0)
    ratio_in = float(best_in.get("S2 + harmonized Landsat", np.nan) / best_in.get("S2 only", np.nan))
    metrics["gapfill_best_ratio"] = ratio
    metrics["gapfill_best_ratio_interior"] = ratio_in
    same_method = {}
    for method in ("whittaker", "linear"):
        if method in pivot.index and {"S2 only", "S2 + harmonized Landsat"} <= set(pivot.columns):
            same_method[method] = float(
                pivot.loc[method, "S2 + harmonized Landsat"] / pivot.loc[method, "S2 only"]
            )
    metrics["gapfill_same_method_ratio"] = same_method
    lmbdas = {
        combo: float(filled_all["whittaker"][combo]["gap_fill_lmbda"])
        for combo in order
        if "whittaker" in filled_all and combo in filled_all["whittaker"]
    }
    metrics["whittaker_lmbda"] = lmbdas
    obs_err = ev.observation_error_table(observations, truth)
    metrics["observation_error"] = obs_err.to_dict(orient="index")
    cover = gtable.pivot(index="method", columns="inputs", values="coverage")[order]
    md += [
        "## Gap-filled NDVI against truth",
        "",
        f"NDVI RMSE of each gap-filling method on a regular 5-day axis (every {pixel_step}th pixel in "
        "x and y; all inputs scored on the same pixel-dates):",
        "",
        markdown_table(pivot, index_name="method"),
        "",
        f"Best method, Sentinel-2 + harmonized Landsat versus Sentinel-2 alone: **{ratio:.2f}×** the RMSE"
        + (f" (Whittaker on both: {same_method['whittaker']:.2f}×)." if "whittaker" in same_method else "."),
        "",
        "Landsat observations are weighted by how far their 30 m view can be trusted "
        "(`harmonize.timeseries.observation_weights`: heterogeneity of the 10 m scene within a "
        "Landsat pixel, disagreement with Sentinel-2), and Whittaker's smoothing is chosen per "
        "input by generalized cross-validation"
        + (
            " (" + ", ".join(f"{k}: λ={v:g}" for k, v in lmbdas.items() if v is not None) + ")."
            if any(v is not None for v in lmbdas.values())
            else "."
        ),
        "",
        "The same on parcel interiors only (no field or land-cover edge within 30 m; no water, roads or "
        "buildings), where NDVI error is not dominated by mixing 10 m red with 20-30 m NIR at edges:",
        "",
        markdown_table(inner, index_name="method"),
        "",
        f"Best method on interiors: **{ratio_in:.2f}×** the RMSE of Sentinel-2 alone.",
        "",
        "Single clear observations against truth on their own day (NDVI RMSE). This is the floor "
        "under every filled series: filling in time bridges clouds and averages noise, but a pixel "
        "a sensor sees wrongly on every date (Sentinel-2's 20 m nir across a field edge or a shore) "
        "stays wrong, so over all pixels the fused series cannot fall much below Sentinel-2's own "
        "error:",
        "",
        markdown_table(
            obs_err.assign(**{"pixel-dates": obs_err["pixel-dates"].map("{:,}".format)}),
            index_name="observations",
            floatfmt="{:.4f}",
        ),
        "",
        "Share of the true pixel-dates each combination could fill (gaps longer than max_gap stay NaN):",
        "",
        markdown_table(cover, index_name="method", floatfmt="{:.1%}"),
        "",
    ]
    gain_obs = ev.clear_observation_gain(s2, landsat)
    agree = ev.same_day_ndvi_agreement(s2, landsat, harm)
    metrics["clear_observations"] = gain_obs
    metrics["same_day_ndvi"] = agree
    md += [
        "## What Landsat adds",
        "",
        f"- Clear observations per pixel per year: Sentinel-2 alone {gain_obs['s2_only']:.1f}, "
        f"fused {gain_obs['fused']:.1f} (**{gain_obs['gain_percent']:+.0f} %**).",
        f"- Same-day NDVI Pearson r, Landsat vs Sentinel-2 ({agree['pairs']} same-day pairs, "
        f"{agree['pixels']:,} pixels clear in both): before harmonization {agree['r_before']:.3f}, "
        f"after {agree['r_after']:.3f} ({agree.get('gain_percent_abs', float('nan')):+.1f} % absolute; "
        f"at most {100 * (1 - agree['r_before']):+.1f} % was left to gain).",
        "",
    ]

    # plots, from the series already computed for the table
    s2_sub = ev._subsample(s2, pixel_step)
    obs = observations["S2 + harmonized Landsat"]
    filled = filled_all["whittaker"]["S2 + harmonized Landsat"]
    truth_ndvi = ndvi(ev.truth_on_grid(truth, s2_sub)).compute()
    fields = _field_masks(truth, s2_sub)
    if fields:
        plot_ndvi_timeseries(
            fields, obs, filled, truth_ndvi, path=rep / "ndvi_timeseries.png",
            title="Field-mean NDVI: observations by sensor, Whittaker fill, truth",
        )
        md += ["## NDVI time series of fields", "", "![NDVI time series](ndvi_timeseries.png)", ""]
    times = filled["time"].values
    dates = [times[int(i)] for i in np.linspace(len(times) * 0.15, len(times) * 0.85, 4).astype(int)]
    plot_ndvi_maps(filled, dates, path=rep / "ndvi_maps.png")
    # the fused observations are in memory already: a clear observation is a finite NDVI
    plot_clear_observations(obs.notnull().rename("clear"), path=rep / "clear_observations.png")
    md += [
        "## NDVI maps (gap-filled, fused)",
        "",
        "![NDVI maps](ndvi_maps.png)",
        "",
        "## Clear observations per month",
        "",
        "![clear observations](clear_observations.png)",
        "",
    ]

    # ---------------------------------------------------------------- training and timings
    if model_dir is not None:
        # The package sits inside the training folder, beside the curves and the history.
        model_dir = Path(model_dir)
        if not (model_dir / "history.csv").exists() and (model_dir.parent / "history.csv").exists():
            model_dir = model_dir.parent
        pics = [p for p in ("loss_curve.png", "results.png", "lr_find.png") if (model_dir / p).exists()]
        if pics or (model_dir / "history.csv").exists():
            md += ["## Training", ""]
            if (model_dir / "history.csv").exists():
                hist = pd.read_csv(model_dir / "history.csv")
                md += [markdown_table(hist.set_index(hist.columns[0]), index_name=hist.columns[0]), ""]
            for p in pics:
                target = rep / p
                target.write_bytes((model_dir / p).read_bytes())
                md += [f"![{p}]({p})", ""]
    if timings:
        metrics["timings_s"] = timings
        tt = pd.DataFrame({"seconds": timings}).rename_axis("stage")
        md += ["## Timings", "", markdown_table(tt, floatfmt="{:.1f}", index_name="stage"), ""]
    metrics["report_seconds"] = time.perf_counter() - t0
    (rep / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    (rep / "report.md").write_text("\n".join(md))
    html_path = rep / "report.html"
    html_path.write_text(_to_html("\n".join(md)))
    log.info("report written to %s (%.1f s)", html_path, metrics["report_seconds"])
    return html_path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (pd.Timestamp, np.datetime64)):
        return str(o)
    return str(o)


def _to_html(md: str) -> str:
    """Just enough Markdown -> HTML for this report (headings, tables, images, bullets)."""
    out = ["<!doctype html><meta charset='utf-8'><title>harmonize demo report</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>"]
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows if not r.startswith("|---")]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:]]
            out.append("</table>")
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](")
            out.append(f"<p><img alt='{html.escape(alt)}' src='{html.escape(src.rstrip(')'))}'></p>")
        elif line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _inline(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if k % 2 else p for k, p in enumerate(parts))
