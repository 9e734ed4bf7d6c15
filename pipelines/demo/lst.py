"""The demo's land surface temperature: a 10 m LST for every Landsat date, scored against truth.

:func:`run_lst` loads each harmonized Landsat date's surface temperature (``ST_B10``, with the
co-registration shifts the ingest estimated) at 30 m on the harmonized grid zoomed out by 3,
keeps the pixels clear in QA_PIXEL with ``ST_QA`` <= 2 K, sharpens them with the harmonized 10 m
reflectance (:func:`harmonize.lst.sharpen_lst`) and scores every method beside bicubic
resampling against the simulator's 10 m truth: RMSE in kelvin on land and by land-cover class.
Optionally it estimates LST on Sentinel-2 dates from reflectance alone
(:func:`harmonize.lst.fit_lst_model`) and states its error. It writes ``OUT/lst/lst.zarr`` (the
product), ``OUT/lst/metrics.json`` and ``OUT/lst/lst.png``; :func:`lst_section` turns them into
the report's section.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr

from harmonize.bands import REFLECTANCE_BANDS
from harmonize.cube import load_cube
from harmonize.errors import HarmonizeError
from harmonize.lst import METHODS, block_mean, fit_lst_model, nested, predict_lst, resample_lst, sharpen_lst
from harmonize.qa import lst_mask
from pipelines.core.ledger import atomic_write_text
from pipelines.demo.markdown import markdown_table
from pipelines.demo.paths import demo_paths, open_cube, open_harmonized
from pipelines.evaluation.truth import calendar_day

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_METHOD", "DEMO_DATES", "MIN_USABLE", "run_lst", "lst_section"]

#: The sharpening the product uses, a key of :data:`_SCORED`: chosen on the demo world and a
#: cloudier one (README) - 0.2 K closer to truth than keeping the blurred 30 m block means.
DEFAULT_METHOD = "local, footprint"
#: A Landsat date is scored when at least this share of its coarse pixels is usable.
MIN_USABLE = 0.3
#: What is scored: bicubic, each model keeping 30 m block means, and ``local`` kept consistent
#: through the thermal footprint instead.
_SCORED: dict[str, dict[str, Any] | None] = {
    "bicubic": None,
    **{m: {"method": m} for m in METHODS},
    "local, footprint": {"method": "local", "keep": "footprint"},
}
#: Landsat dates the demo sharpens by default (about 10 s on two cores); None: all of them.
DEMO_DATES = 4
_MAX_S2_DATES = 12


def _landsat_items(world: Any, harmonized: xr.Dataset) -> list[pystac.Item]:
    ids = {i for v in harmonized["item_id"].values for i in str(v).split(",") if i}
    return [pystac.Item.from_dict(d) for d in world.items() if d["id"] in ids]


def _load_lst30(world: Any, harmonized: xr.Dataset) -> xr.Dataset:
    """Surface temperature of the harmonized dates at 30 m, shifted as ingest shifted them."""
    shifts = {
        i: (float(dx), float(dy))
        for v, dx, dy in zip(
            harmonized["item_id"].values,
            harmonized["shift_x"].values,
            harmonized["shift_y"].values,
            strict=True,
        )
        for i in str(v).split(",")
        if i
    }
    items = _landsat_items(world, harmonized)
    coarse = harmonized.odc.geobox.zoom_out(3)
    return load_cube(items, bands=["lst"], geobox=coarse, shifts=shifts).compute()


def _classes(truth: xr.Dataset) -> dict[str, np.ndarray]:
    """Boolean maps of ``land`` (not water) and of each land-cover class, on the truth grid."""
    lc = truth["landcover"].values
    names = str(truth["landcover"].attrs["flag_meanings"]).split()
    out = {"land": lc != 4}
    out.update({n: lc == v for v, n in zip(truth["landcover"].attrs["flag_values"], names, strict=True)})
    return out


class _Scores:
    """Squared errors summed per (method, class) over dates, and per-date land RMSE."""

    def __init__(self) -> None:
        self.sse: dict[tuple[str, str], float] = {}
        self.n: dict[tuple[str, str], int] = {}
        self.dates: list[dict[str, Any]] = []

    def add(self, method: str, err: np.ndarray, classes: dict[str, np.ndarray]) -> float:
        for c, m in classes.items():
            e = err[m[: err.shape[0], : err.shape[1]]]
            e = e[np.isfinite(e)]
            self.sse[(method, c)] = self.sse.get((method, c), 0.0) + float((e**2).sum())
            self.n[(method, c)] = self.n.get((method, c), 0) + int(e.size)
        land = err[classes["land"][: err.shape[0], : err.shape[1]]]
        return float(np.sqrt(np.nanmean(land**2)))

    def table(self) -> pd.DataFrame:
        methods = list(dict.fromkeys(m for m, _ in self.sse))
        classes = list(dict.fromkeys(c for _, c in self.sse))
        rmse = {
            c: [np.sqrt(self.sse[(m, c)] / self.n[(m, c)]) if self.n[(m, c)] else np.nan for m in methods]
            for c in classes
        }
        return pd.DataFrame(rmse, index=pd.Index(methods, name="method"))


def _sharpen_date(lst: xr.DataArray, refl: xr.Dataset, method: str) -> xr.DataArray:
    kwargs = _SCORED[method]
    return resample_lst(lst, refl) if kwargs is None else sharpen_lst(lst, refl, **kwargs)


def _sharpen_all(
    lst30: xr.Dataset, harmonized: xr.Dataset, truth: xr.Dataset, method: str
) -> tuple[xr.DataArray, _Scores, int | None]:
    """The product (every Landsat date, ``method``), the scores and the best date's index."""
    n = min(harmonized.sizes["x"], truth.sizes["x"]), min(harmonized.sizes["y"], truth.sizes["y"])
    if not (
        np.allclose(harmonized["x"].values[: n[0]], truth["x"].values[: n[0]])
        and np.allclose(harmonized["y"].values[: n[1]], truth["y"].values[: n[1]])
    ):
        raise HarmonizeError("The harmonized dates are not on the truth's 10 m grid; cannot score LST.")
    classes = _classes(truth)
    scores, products, best = _Scores(), [], (0.0, None)
    for i in range(lst30.sizes["time"]):
        step = lst30.isel(time=i)
        usable = step["lst"].where(lst_mask(step["lst_qa"], step["clear"]))
        refl = harmonized.sel(time=step.time.values)[list(REFLECTANCE_BANDS)].compute()
        lst, refl = nested(usable, refl)
        # usable: clear, confident LST under finite harmonized reflectance
        seen = np.isfinite(block_mean(np.stack([refl[b].values for b in REFLECTANCE_BANDS]), 3)).all(0)
        lst = lst.where(seen)
        share = float(np.isfinite(lst.values).mean())
        if share * lst.size < 100:
            products.append(np.full(refl["red"].shape, np.nan, np.float32))
            continue
        out = {m: _sharpen_date(lst, refl, m) for m in (_SCORED if share >= MIN_USABLE else (method,))}
        products.append(out[method].values)
        if share < MIN_USABLE:
            continue
        t = truth["lst"].sel(time=calendar_day(step.time.values)).values
        row = {"time": str(pd.Timestamp(step.time.values).date()), "usable": share}
        row |= {m: scores.add(m, o.values - t[: o.shape[0], : o.shape[1]], classes) for m, o in out.items()}
        row["product_block_rms_k"] = float(
            np.sqrt(np.nanmean((block_mean(out[method].values, 3) - lst.values) ** 2))
        )
        scores.dates.append(row)
        if share > best[0] and 120 <= pd.Timestamp(step.time.values).day_of_year <= 270:
            best = (share, i)
    ny, nx = products[0].shape
    coords = {"time": lst30.time.values, "y": harmonized["y"].values[:ny], "x": harmonized["x"].values[:nx]}
    product = xr.DataArray(np.stack(products), dims=("time", "y", "x"), coords=coords, name="lst")
    return product, scores, best[1]


def _s2_estimate(
    lst30: xr.Dataset, harmonized: xr.Dataset, cube: xr.Dataset, truth: xr.Dataset
) -> dict[str, Any]:
    """LST on Sentinel-2 dates from reflectance alone, fitted on the usable Landsat dates."""
    usable = lst30["lst"].where(lst_mask(lst30["lst_qa"], lst30["clear"]))
    keep = [
        i for i in range(usable.sizes["time"]) if float(np.isfinite(usable.isel(time=i)).mean()) >= MIN_USABLE
    ]
    refl = harmonized.sel(time=usable.time.values[keep])[list(REFLECTANCE_BANDS)].compute()
    lst, refl = nested(usable.isel(time=keep), refl)
    model = fit_lst_model(lst, refl)
    s2 = cube.isel(time=np.flatnonzero(np.asarray(cube["sensor"].values) == "sentinel-2"))
    clear = s2["clear"].mean(("y", "x")).compute().values
    cand = np.flatnonzero(clear >= 0.5)
    pick = cand[np.linspace(0, len(cand) - 1, min(_MAX_S2_DATES, len(cand))).astype(int)] if len(cand) else []
    land = _classes(truth)["land"]
    errs, offsets = [], []
    for i in pick:
        step = s2.isel(time=int(i))
        r = step[list(REFLECTANCE_BANDS)].where(step["clear"]).compute()
        est = predict_lst(model, r, step.time.values).values
        e = (est - truth["lst"].sel(time=calendar_day(step.time.values)).values)[land]
        e = e[np.isfinite(e)]
        errs.append(e)
        offsets.append(float(e.mean()))
    if not errs:
        return {"dates": 0}
    pooled = np.concatenate(errs)
    centred = np.concatenate([e - e.mean() for e in errs])
    return {
        "dates": len(errs),
        "rmse_k": float(np.sqrt(np.mean(pooled**2))),
        "rmse_without_date_offset_k": float(np.sqrt(np.mean(centred**2))),
        "date_offset_sd_k": float(np.std(offsets)),
        "fit_rmse_k": model.rmse_fit,
        "landsat_dates_fitted": model.n_dates,
    }


def _write_product(product: xr.DataArray, lst30: xr.Dataset, path: Path, method: str) -> None:
    import zarr

    ds = product.rename("lst").to_dataset().assign_coords(item_id=("time", lst30["item_id"].values))
    ds["lst"].attrs = {
        "units": "K",
        "long_name": f"10 m land surface temperature ({method} sharpening)",
    }
    enc = {
        "lst": {
            "dtype": "uint16",
            "scale_factor": np.float32(0.01),
            "add_offset": np.float32(0.0),
            "_FillValue": np.uint16(0),
            "compressors": [zarr.codecs.ZstdCodec(level=3)],
        }
    }
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=enc)


def _figure(
    product: xr.DataArray,
    lst30: xr.Dataset,
    harmonized: xr.Dataset,
    truth: xr.Dataset,
    i: int,
    path: Path,
    method: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = lst30.isel(time=i)
    refl = harmonized.sel(time=step.time.values)[list(REFLECTANCE_BANDS)]
    lst, refl = nested(step["lst"].where(lst_mask(step["lst_qa"], step["clear"])), refl)
    t = truth["lst"].sel(time=calendar_day(step.time.values)).values[: refl.sizes["y"], : refl.sizes["x"]]
    sharp = product.isel(time=i).values[: refl.sizes["y"], : refl.sizes["x"]]
    panels = {
        "truth (10 m)": t,
        "Landsat ST_B10, bicubic": resample_lst(lst, refl).values,
        f"sharpened ({method})": sharp,
        "sharpened - truth": sharp - t,
    }
    lo, hi = np.nanpercentile(t, [2, 98])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, (name, img) in zip(axes, panels.items(), strict=True):
        diff = name.endswith("truth")
        im = ax.imshow(
            img, cmap="RdBu_r" if diff else "inferno", vmin=-5 if diff else lo, vmax=5 if diff else hi
        )
        ax.set_title(name)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, shrink=0.8, label="K")
    fig.suptitle(f"Land surface temperature, {pd.Timestamp(step.time.values):%Y-%m-%d}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _pick_dates(harmonized: xr.Dataset, max_dates: int | None) -> xr.Dataset:
    """``max_dates`` of the harmonized dates at least half clear, spread evenly over the series
    (all dates when ``max_dates`` is None)."""
    if max_dates is None or max_dates >= harmonized.sizes["time"]:
        return harmonized
    clear = harmonized["clear"].mean(("y", "x")).compute().values
    cand = np.flatnonzero(clear >= 0.5)
    if len(cand) == 0:
        cand = np.argsort(-clear)[:max_dates]
    pick = np.unique(cand[np.linspace(0, len(cand) - 1, min(max_dates, len(cand))).round().astype(int)])
    return harmonized.isel(time=pick)


def run_lst(
    out: str | Path,
    *,
    method: str = DEFAULT_METHOD,
    max_dates: int | None = DEMO_DATES,
    s2_estimate: bool = False,
) -> dict[str, Any]:
    """Sharpen, score and write the demo's LST (module docstring); return its metrics.

    Parameters
    ----------
    out
        A finished demo folder (world, cube, harmonized).
    method
        The sharpening written as the product (every method is scored).
    max_dates
        Sharpen this many of the harmonized Landsat dates (the clearer half, spread over the
        year) - the demo's default keeps the stage within its time budget; ``None``: every date.
    s2_estimate
        Also estimate LST on Sentinel-2 dates from reflectance alone, and score it.
    """
    from harmonize.world import open_world

    paths = demo_paths(out)
    folder = Path(out) / "lst"
    world = open_world(paths["world"])
    truth = world.truth
    if "lst" not in truth:
        log.warning(
            "lst: the world in %s has no surface temperature (made before issue 16); skipped", paths["world"]
        )
        return {"skipped": "world without LST; recreate it"}
    available = open_harmonized(out)
    harmonized = _pick_dates(available, max_dates)
    inputs = {
        "item_ids": [str(v) for v in harmonized["item_id"].values],
        "method": method,
        "max_dates": max_dates,
        "s2_estimate": s2_estimate,
    }
    done = _up_to_date(folder, inputs)
    if done is not None:
        log.info("lst: %s is up to date (same harmonized dates and settings)", folder)
        return done | {"up_to_date": True}
    lst30 = _load_lst30(world, harmonized)
    product, scores, best = _sharpen_all(lst30, harmonized, truth, method)
    folder.mkdir(parents=True, exist_ok=True)
    _write_product(product, lst30, folder / "lst.zarr", method)
    metrics: dict[str, Any] = {
        "inputs": inputs,
        "method": method,
        "landsat_dates": int(lst30.sizes["time"]),
        "landsat_dates_available": int(available.sizes["time"]),
        "scored_dates": len(scores.dates),
        "rmse_k": scores.table().to_dict(orient="index") if scores.dates else {},
        "dates": scores.dates,
    }
    if s2_estimate:
        metrics["s2_from_reflectance"] = _s2_estimate(lst30, harmonized, open_cube(out), truth)
    if best is not None:
        _figure(product, lst30, harmonized, truth, best, folder / "lst.png", method)
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=1, default=float) + "\n")
    log.info(
        "lst: %d Landsat dates sharpened (%d scored) into %s",
        metrics["landsat_dates"],
        metrics["scored_dates"],
        folder,
    )
    return metrics


def _up_to_date(folder: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of an earlier run on the same inputs, if its product and figures are there."""
    path = folder / "metrics.json"
    if not (path.exists() and (folder / "lst.zarr").exists()):
        return None
    try:
        metrics = json.loads(path.read_text())
    except ValueError:
        return None
    return metrics if metrics.get("inputs") == inputs else None


def _dates(n: int) -> str:
    return f"{n} Landsat date" + ("" if n == 1 else "s")


def _block_note(m: dict[str, Any]) -> str:
    """What the product keeps of ST_B10, measured: the RMS of its 30 m block means' difference."""
    rms = [d["product_block_rms_k"] for d in m.get("dates", []) if "product_block_rms_k" in d]
    if not rms:
        return ""
    if m["method"] in METHODS:
        return f"The product keeps ST_B10's 30 m block means ({np.mean(rms):.3f} K RMS difference). "
    return (
        f"The product (`{m['method']}`) is consistent with ST_B10 through the thermal footprint; its "
        f'30 m block means differ from ST_B10 by {np.mean(rms):.2f} K RMS (`keep="block"` keeps them, '
        "at the cost the table shows). "
    )


def lst_section(out: str | Path) -> str:
    """The report's LST section (Markdown), from ``OUT/lst/metrics.json``; empty if there is none."""
    path = Path(out) / "lst" / "metrics.json"
    if not path.exists():
        return ""
    m = json.loads(path.read_text())
    if not m.get("rmse_k"):
        return ""
    table = pd.DataFrame(m["rmse_k"]).T
    avail = m.get("landsat_dates_available", m["landsat_dates"])
    of_all = f" of {avail} (`run_lst(out, max_dates=None)` does all)" if avail > m["landsat_dates"] else ""
    cols = [
        c
        for c in ("land", "cropland", "forest", "grassland", "bare_soil", "road", "building", "water")
        if c in table
    ]
    md = [
        "## Land surface temperature (10 m)",
        "",
        f"Landsat's 30 m surface temperature (ST_B10 from a ~100 m thermal footprint; QA_PIXEL clear and "
        f"ST_QA <= 2 K) sharpened to 10 m with the harmonized reflectance on **{_dates(m['landsat_dates'])}"
        f"**{of_all} (the product: `lst/lst.zarr`, method `{m['method']}`); scored against the "
        f"simulator's 10 m truth on the {_dates(m['scored_dates'])} with >= {MIN_USABLE:.0%} usable "
        "pixels. RMSE in kelvin, pooled over those dates, on land (no water) and by class:",
        "",
        markdown_table(table[cols], index_name="method", floatfmt="{:.2f}"),
        "",
        f"{_block_note(m)}"
        "`bicubic` resamples the 30 m LST; `tsharp`, `global` and `local` add the coarse residual back "
        "so every 30 m block keeps the input's temperature - and so keep the blur of the ~100 m thermal "
        "footprint that the 30 m product carries. `local, footprint` keeps the LST consistent through "
        'that footprint instead (`sharpen_lst(..., keep="footprint")`): closer to the truth, but its '
        "30 m block means differ from the input's.",
        "",
    ]
    s2 = m.get("s2_from_reflectance") or {}
    if s2.get("dates"):
        md += [
            f"**LST on Sentinel-2 dates from reflectance alone** ({s2['dates']} clear dates; a regression "
            f"on indices and season fitted on {s2['landsat_dates_fitted']} Landsat dates): "
            f"**{s2['rmse_k']:.1f} K RMSE** against truth. Reflectance does not show the day's weather: "
            f"the per-date offset alone varies by {s2['date_offset_sd_k']:.1f} K (standard deviation); "
            f"without it the error would be {s2['rmse_without_date_offset_k']:.1f} K. Treat these as a "
            "seasonal estimate, not a measurement.",
            "",
        ]
    if (Path(out) / "lst" / "lst.png").exists():
        md += ["![Land surface temperature](../lst/lst.png)", ""]
    return "\n".join(md)
