"""The report's own figures: one held-out window before and after harmonization, and the fields
whose NDVI curves the report plots against truth."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

from harmonize.bands import REFLECTANCE_BANDS  # noqa: E402
from pipelines.evaluation.harmonization import index_patch_size, test_windows  # noqa: E402
from pipelines.evaluation.truth import calendar_day, truth_on_grid  # noqa: E402

__all__ = ["comparison_figure", "largest_fields"]


def _rgb(arr: np.ndarray) -> np.ndarray:
    """[bands(blue, green, red …), y, x] reflectance to a displayable RGB image."""
    rgb = np.stack([arr[2], arr[1], arr[0]], axis=-1)
    return np.clip(np.nan_to_num(rgb / 0.25), 0, 1) ** (1 / 1.6)


def _panels(
    cube: xr.Dataset, harmonized: xr.Dataset, truth: xr.Dataset, index: pd.DataFrame, r: pd.Series
) -> dict[str, np.ndarray]:
    """The window of row ``r``: Landsat input, harmonized, Sentinel-2 and truth, ``[band, y, x]``."""
    patch = index_patch_size(index)
    ys, xs = slice(int(r.y0), int(r.y0) + patch), slice(int(r.x0), int(r.x0) + patch)
    lt = np.datetime64(pd.Timestamp(r.landsat_time).to_datetime64(), "ns")
    st = np.datetime64(pd.Timestamp(r.s2_time).to_datetime64(), "ns")
    tr = truth_on_grid(truth, cube).sel(time=calendar_day(r.s2_time))

    def stack(ds: xr.Dataset) -> np.ndarray:
        return np.stack([np.asarray(ds[b].isel(y=ys, x=xs).values, np.float32) for b in REFLECTANCE_BANDS])

    return {
        f"Landsat input ({pd.Timestamp(lt):%Y-%m-%d})": stack(cube.sel(time=lt)),
        "harmonized (UNet)": stack(harmonized.sel(time=lt)),
        f"Sentinel-2 ({pd.Timestamp(st):%Y-%m-%d})": stack(cube.sel(time=st)),
        "truth": stack(tr),
    }


def comparison_figure(
    cube: xr.Dataset, harmonized: xr.Dataset, truth: xr.Dataset, index: pd.DataFrame, path: Path
) -> Path | None:
    """True colour and NDVI of the clearest held-out window: Landsat, harmonized, Sentinel-2, truth.

    Parameters
    ----------
    cube, harmonized
        The co-registered cube and the harmonized Landsat dates.
    truth
        The simulator's truth.
    index
        The pair index; its clearest test window is shown (any window without test windows).
    path
        Where the PNG goes.

    Returns
    -------
    pathlib.Path or None
        ``path``, or ``None`` when the index has no window at all.
    """
    windows = test_windows(index)
    if windows.empty:
        windows = index
    if windows.empty:
        return None
    r = windows.sort_values(["clear_landsat", "clear_s2"], ascending=False).iloc[0]
    panels = _panels(cube, harmonized, truth, index, r)
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4), constrained_layout=True)
    for ax, (title, arr) in zip(axes[0], panels.items(), strict=True):
        ax.imshow(_rgb(arr))
        ax.set_title(title)
        ax.axis("off")
    for ax, (title, arr) in zip(axes[1], panels.items(), strict=True):
        nd = (arr[3] - arr[2]) / (arr[3] + arr[2])
        im = ax.imshow(nd, vmin=-0.2, vmax=1.0, cmap="RdYlGn")
        ax.set_title(f"NDVI, {title.split(' (')[0]}")
        ax.axis("off")
    fig.colorbar(im, ax=axes[1].tolist(), shrink=0.8, label="NDVI")
    fig.suptitle("True colour (top) and NDVI (bottom) of one held-out test window")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _crop_name(crops: xr.DataArray | None, fid: float, names: list[str], codes: list[int]) -> str:
    """The crop sown in field ``fid`` (``"field"`` when the truth does not say)."""
    if crops is None:
        return "field"
    try:
        code = int(crops.sel({crops.dims[0]: fid}).values)
        return names[codes.index(code)] if code in codes and names else str(code)
    except (KeyError, IndexError, ValueError):
        return "field"


def largest_fields(truth: xr.Dataset, like: xr.Dataset, n: int = 4) -> dict[str, xr.DataArray]:
    """Masks of ``n`` large fields of different crops, on ``like``'s grid.

    Parameters
    ----------
    truth
        The simulator's truth, with ``field_id`` (and ``field_crop`` to name the crops).
    like
        Sets the grid.
    n
        How many fields.

    Returns
    -------
    dict of str to xarray.DataArray
        ``"CROP (field ID)"`` -> boolean ``(y, x)`` mask, largest fields first; empty when the
        truth has no fields.
    """
    if "field_id" not in truth:
        return {}
    fid = truth["field_id"].reindex(y=like["y"].values, x=like["x"].values, method="nearest").load()
    values = fid.values[np.isfinite(fid.values)] if fid.dtype.kind == "f" else fid.values
    ids, counts = np.unique(values, return_counts=True)
    crops = truth["field_crop"].load() if "field_crop" in truth else None
    names = str(crops.attrs.get("flag_meanings", "")).split() if crops is not None else []
    codes = list(crops.attrs.get("flag_values", [])) if crops is not None else []
    out: dict[str, xr.DataArray] = {}
    seen: set[str] = set()
    for i in np.argsort(counts)[::-1]:
        fid_i = ids[i]
        if fid_i <= 0:  # 0: not a field
            continue
        crop = _crop_name(crops, fid_i, names, codes)
        if crop in seen and len(seen) < n:
            continue
        seen.add(crop)
        out[f"{crop} (field {int(fid_i)})"] = fid == fid_i
        if len(out) >= n:
            break
    return out
