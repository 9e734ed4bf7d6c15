"""The report's crop-type section: the classify stage's map beside the truth, its scores.

:func:`classification_section` reads ``OUT/classify`` (``metrics.json``, ``classes.tif``) and
returns Markdown: the comparison of feature sets (Sentinel-2 alone, fused with harmonized
Landsat, fused with raw Landsat), the map beside the truth's legend classes, the confusion
matrix and per-class F1 of the mapped variant on the held-out blocks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.demo.markdown import markdown_table
from pipelines.demo.paths import demo_paths
from pipelines.evaluation.landclasses import class_colors, class_names, labels_from_truth

log = logging.getLogger(__name__)

__all__ = [
    "CLASSIFY_DIR",
    "DEMO_CLASSIFY",
    "classify_demo",
    "classification_section",
    "classification_numbers",
]

#: The classify stage's folder inside a demo folder.
CLASSIFY_DIR = "classify"
#: The demo's classify settings (on by default; ``harmonize demo --no-classify`` leaves it out):
#: the fused map alone, with the library's one-level network (250 steps) on period NDVI and
#: phenology read from the time-series stage's observations (on the demo world ~17 CPU s at
#: load 14, from ~50 with the six bands read from every scene of both cubes). The comparison with
#: Sentinel-2 alone and with raw Landsat trains two more classifiers;
#: ``harmonize classify OUT/cube --harmonized OUT/harmonized --labels OUT/world/truth.zarr
#: --out OUT/classify`` adds them to the same folder (the fused units are kept) and the next
#: report shows the three-way table.
DEMO_CLASSIFY: dict[str, Any] = {"variants": ["fused"], "map_variant": "fused"}
_VARIANT_NAMES = {
    "s2": "Sentinel-2 only",
    "fused": "Sentinel-2 + harmonized Landsat",
    "fused_raw": "Sentinel-2 + raw Landsat",
}


def classify_demo(
    out: str | Path, truth: str | Path, common: dict[str, Any], settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the classify stage on a demo folder's cube and harmonized dates (``OUT/classify``).

    Parameters
    ----------
    out
        The demo folder.
    truth
        The world's truth store (the labels).
    common
        ``scheduler``/``progress`` as every demo stage gets them.
    settings
        :class:`~pipelines.stages.classify.ClassifyStageConfig` fields over :data:`DEMO_CLASSIFY`.
    """
    from pipelines.stages.classify import ClassifyStageConfig, classify_stage

    paths = demo_paths(out)
    config = ClassifyStageConfig(
        cube=paths["cube"],
        harmonized=paths["harmonized"],
        timeseries=paths["timeseries"],
        labels=Path(truth),
        out=Path(out) / CLASSIFY_DIR,
        **{**DEMO_CLASSIFY, **_small_world(paths["cube"]), **(settings or {}), **common},
    )
    return classify_stage(config)


def _small_world(cube_dir: Path) -> dict[str, Any]:
    """Settings for a world too small for 128-pixel blocks and monthly periods (the tiny demo:
    128 pixels, six weeks): 32-pixel blocks, 10-day periods, a shorter training."""
    from pipelines.core.stores import open_cube

    cube = open_cube(cube_dir)
    side = min(cube.sizes["y"], cube.sizes["x"])
    days = (pd.Timestamp(cube["time"].values.max()) - pd.Timestamp(cube["time"].values.min())).days
    out: dict[str, Any] = {}
    if side < 4 * 128:
        out.update(block_size=max(16, side // 4), guard=4, classifier={"steps": 60, "batch_size": 8})
    if days < 180:
        out["freq"] = "10D"
    return out


def _metrics(out: Path) -> dict[str, Any] | None:
    path = out / CLASSIFY_DIR / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def classification_numbers(out: str | Path) -> dict[str, Any]:
    """The section's figures for ``metrics.json`` (empty when the stage did not run)."""
    m = _metrics(Path(out))
    if m is None:
        return {}
    return {
        "classification": {
            v: {"overall_accuracy": r["overall_accuracy"], "kappa": r["kappa"], "macro_f1": r["macro_f1"]}
            for v, r in m["variants"].items()
        }
    }


def _comparison(m: dict[str, Any]) -> str:
    table = pd.DataFrame(m["table"]).set_index("variant")
    table.index = [_VARIANT_NAMES.get(v, v) for v in table.index]
    cols = {
        "overall_accuracy": "overall accuracy",
        "kappa": "kappa",
        "macro_f1": "macro F1",
        "majority_baseline": "majority class",
        "vs_s2_points": "vs S2 only (points)",
    }
    table = table[[c for c in cols if c in table]].rename(columns=cols)
    return markdown_table(table, index_name="features")


def _confusion(res: dict[str, Any]) -> str:
    names = class_names()
    labels = [names.get(c, str(c)) for c in res["codes"]]
    cm = pd.DataFrame(np.asarray(res["confusion"]), index=labels, columns=labels)
    return markdown_table(cm, index_name="true \\ predicted", floatfmt="{:.0f}")


def _per_class(res: dict[str, Any]) -> str:
    rows = pd.DataFrame(res["classes"]).set_index("name")[["support", "precision", "recall", "f1"]]
    rows["support"] = rows["support"].map("{:,}".format)
    return markdown_table(rows, index_name="class")


def _figure(out: Path, rep: Path, split: dict[str, Any]) -> str | None:
    """``classification.png``: the class map and the truth's classes, held-out blocks outlined."""
    cog = out / CLASSIFY_DIR / "classes.tif"
    truth_path = demo_paths(out)["truth"]
    if not cog.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rioxarray
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    pred = rioxarray.open_rasterio(cog).squeeze("band", drop=True)
    colors, names = class_colors(), class_names()
    cmap = ListedColormap(["#ffffff"] + [colors[k] for k in sorted(colors)])
    panels = [("classified", pred.values)]
    if truth_path.exists():
        from harmonize.pairs.reference import open_reference_store

        panels.append(("truth", labels_from_truth(open_reference_store(truth_path), pred).values))
    from harmonize.classify import block_split

    test = block_split(
        pred.shape, block=split["block_size"], test_fraction=split["test_fraction"], seed=split["seed"]
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 2, 5.2))
    for ax, (title, data) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(data, cmap=cmap, vmin=-0.5, vmax=len(colors) + 0.5, interpolation="nearest")
        ax.contour(test.astype(float), levels=[0.5], colors="black", linewidths=1.0)
        ax.set_title(title)
        ax.set_axis_off()
    handles = [Patch(color=colors[k], label=names[k]) for k in sorted(colors)]
    fig.legend(handles=handles, loc="center right", frameon=False)
    fig.subplots_adjust(right=0.84, wspace=0.05)
    path = rep / "classification.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _feature_words(m: dict[str, Any]) -> str:
    return "NDVI" if m.get("features") == "ndvi" else "the six reflectance bands and NDVI"


def classification_section(out: str | Path) -> str:
    """Report hook: the crop-type section as Markdown ("" when the classify stage did not run).

    Parameters
    ----------
    out
        A demo folder; the figure goes to ``OUT/report/classification.png``.
    """
    root = Path(out)
    m = _metrics(root)
    if m is None:
        return ""
    rep = demo_paths(root)["report"]
    rep.mkdir(parents=True, exist_ok=True)
    variant = m["map_variant"]
    res = m["variants"][variant]
    split = m["split"]
    md = [
        "## Crop-type map",
        "",
        "A small convolutional network (`harmonize.classify`'s UNet at its default single level: "
        "a 1×1 layer mixing each pixel's features, two 3×3 convolutions for the field context) "
        "labels every 10 m pixel from per-period composites "
        f"of {_feature_words(m)} and the phenology of that NDVI. It learns on "
        f"{split['block_size']}-pixel blocks and is scored on {split['test_fraction']:.0%} of the "
        f"blocks it never saw (training labels kept {split['guard']} pixels away from them), against "
        "the simulator's land cover and field crops. Accuracy by feature set:",
        "",
        _comparison(m),
        "",
        f"The map (`classify/classes.tif`, STAC item `classify/classes.json` with "
        f"`classification:classes`; probabilities in `classify/probabilities.tif`) is "
        f"{_VARIANT_NAMES.get(variant, variant)}: overall accuracy "
        f"**{res['overall_accuracy']:.3f}**, kappa {res['kappa']:.3f}, macro F1 {res['macro_f1']:.3f} "
        f"on {res['test_pixels']:,} held-out pixels.",
        "",
    ]
    figure = _figure(root, rep, split)
    if figure:
        md += [f"![crop-type map]({figure})", "", "(held-out blocks outlined in black)", ""]
    md += [
        "Per-class scores:",
        "",
        _per_class(res),
        "",
        "Confusion matrix (pixels):",
        "",
        _confusion(res),
        "",
    ]
    return "\n".join(md)
