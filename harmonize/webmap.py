"""Offline interactive maps (Leaflet): image layers by date, a swipe between any two, overlays.

:func:`write_map` writes one self-contained HTML file: Leaflet's JavaScript and CSS and every
image (PNG data URIs) are embedded, so the page opens from disk with no tile server, CDN or
network. The page holds

- a **date selector**: each date carries its own set of image layers (for example Landsat input,
  harmonized, Sentinel-2, truth, NDVI on that date);
- a **swipe** control: a left and a right layer chosen from the date's layers and the static
  ones, split by a slider the user drags;
- **overlays** (for example a crop-type map) toggled in Leaflet's layer control;
- a legend for categorical overlays.

Images are georeferenced by their ``(south, west, north, east)`` bounds in degrees; the arrays
are rendered with :func:`rgb_image`, :func:`ndvi_image` and :func:`class_image`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from os import PathLike
from pathlib import Path

import numpy as np

from harmonize.errors import HarmonizeError

__all__ = ["MapDate", "rgb_image", "ndvi_image", "class_image", "png_data_uri", "map_html", "write_map"]

#: A (south, west, north, east) box in degrees.
Bounds = tuple[float, float, float, float]


@dataclass
class MapDate:
    """One entry of the date selector: its label and its image layers (name -> RGBA array)."""

    label: str
    layers: dict[str, np.ndarray] = field(default_factory=dict)


def rgb_image(rgb: np.ndarray, *, lo: float = 0.0, hi: float = 0.3, gamma: float = 0.8) -> np.ndarray:
    """An RGBA ``uint8`` image of reflectance ``(3, y, x)``: stretched ``lo..hi``, NaN transparent.

    Parameters
    ----------
    rgb
        Red, green and blue reflectance, ``(3, y, x)``.
    lo, hi
        Reflectance mapped to black and to white.
    gamma
        Brightness exponent after the stretch.

    Returns
    -------
    numpy.ndarray
        ``(y, x, 4)`` ``uint8``.
    """
    arr = np.asarray(rgb, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise HarmonizeError(f"rgb_image needs (3, y, x) reflectance, got shape {arr.shape}")
    valid = np.all(np.isfinite(arr), axis=0)
    scaled = np.clip((np.nan_to_num(arr) - lo) / (hi - lo), 0.0, 1.0) ** gamma
    out = np.zeros(arr.shape[1:] + (4,), np.uint8)
    out[..., :3] = np.moveaxis(np.round(scaled * 255), 0, -1).astype(np.uint8)
    out[..., 3] = np.where(valid, 255, 0)
    return out


def ndvi_image(ndvi: np.ndarray, *, lo: float = -0.1, hi: float = 0.9) -> np.ndarray:
    """An RGBA ``uint8`` image of NDVI ``(y, x)`` with matplotlib's ``RdYlGn``; NaN transparent."""
    from matplotlib import colormaps

    arr = np.asarray(ndvi, dtype=np.float32)
    rgba = colormaps["RdYlGn"](np.clip((np.nan_to_num(arr) - lo) / (hi - lo), 0, 1))
    out = np.round(rgba * 255).astype(np.uint8)
    out[..., 3] = np.where(np.isfinite(arr), 255, 0)
    return out


def class_image(classes: np.ndarray, colors: Mapping[int, str]) -> np.ndarray:
    """An RGBA ``uint8`` image of class codes ``(y, x)``; codes without a colour are transparent.

    Parameters
    ----------
    classes
        Integer class codes.
    colors
        Code -> CSS hex colour (``"#rrggbb"``).
    """
    from matplotlib.colors import to_rgba

    codes = np.asarray(classes)
    out = np.zeros(codes.shape + (4,), np.uint8)
    for code, color in colors.items():
        out[codes == code] = np.round(np.array(to_rgba(color)) * 255).astype(np.uint8)
    return out


def png_data_uri(rgba: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an RGBA ``uint8`` ``(y, x, 4)`` image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA").save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _vendor(name: str) -> str:
    return (resources.files("harmonize") / "_vendor" / "leaflet" / name).read_text(encoding="utf-8")


def _check(dates: Sequence[MapDate], bounds: Bounds) -> None:
    if not dates:
        raise HarmonizeError("an interactive map needs at least one date with image layers")
    for d in dates:
        if not d.layers:
            raise HarmonizeError(f"date {d.label!r} of the interactive map has no image layers")
    s, w, n, e = bounds
    if not (s < n and w < e):
        raise HarmonizeError(
            f"map bounds must be (south, west, north, east) with south<north, west<east: {bounds}"
        )


def map_html(
    dates: Sequence[MapDate],
    bounds: Bounds,
    *,
    overlays: Mapping[str, np.ndarray] | None = None,
    legends: Mapping[str, Mapping[str, str]] | None = None,
    title: str = "harmonize",
    left: str | None = None,
    right: str | None = None,
) -> str:
    """The self-contained HTML of an interactive map (see the module docstring).

    Parameters
    ----------
    dates
        The date selector's entries, each with its image layers (RGBA arrays).
    bounds
        ``(south, west, north, east)`` of every image, in degrees.
    overlays
        Static layers (name -> RGBA array) toggled in the layer control and offered to the swipe.
    legends
        Overlay name -> {label: CSS colour}, shown under the swipe control.
    title
        Page title and heading.
    left, right
        The layers the swipe starts with (default: the first date's first two layers).

    Returns
    -------
    str
        The page.
    """
    _check(dates, bounds)
    overlays = dict(overlays or {})
    names = list(dict.fromkeys(n for d in dates for n in d.layers))
    data = {
        "title": title,
        "bounds": [[bounds[0], bounds[1]], [bounds[2], bounds[3]]],
        "dates": [
            {"label": d.label, "layers": {k: png_data_uri(v) for k, v in d.layers.items()}} for d in dates
        ],
        "overlays": {k: png_data_uri(v) for k, v in overlays.items()},
        "legends": {k: dict(v) for k, v in (legends or {}).items()},
        "left": left or names[0],
        "right": right or (names[1] if len(names) > 1 else names[0]),
    }
    return _PAGE.format(
        title=html.escape(title),
        leaflet_css=_vendor("leaflet.css"),
        leaflet_js=_vendor("leaflet.js"),
        data=json.dumps(data).replace("</", "<\\/"),
        script=_SCRIPT,
    )


def write_map(path: str | PathLike[str], dates: Sequence[MapDate], bounds: Bounds, **kwargs: object) -> Path:
    """Write :func:`map_html` to ``path`` (folders created); return the path.

    Parameters
    ----------
    path
        The HTML file to write.
    dates, bounds, kwargs
        As in :func:`map_html`.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = map_html(dates, bounds, **kwargs)  # type: ignore[arg-type]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{leaflet_css}</style>
<style>
html, body {{ margin: 0; height: 100%; font: 13px/1.3 system-ui, sans-serif; }}
#hz-map {{ position: absolute; top: 0; bottom: 0; left: 0; right: 0; background: #dde3e8; }}
.hz-layer {{ image-rendering: pixelated; }}
#hz-panel {{ background: rgba(255,255,255,0.93); padding: 6px 8px; border-radius: 4px; min-width: 220px; }}
#hz-panel h1 {{ font-size: 14px; margin: 0 0 4px; }}
#hz-panel label {{ display: block; margin: 2px 0; }}
#hz-panel select {{ max-width: 200px; }}
#hz-swipe-range {{ width: 100%; }}
#hz-divider {{ position: absolute; top: 0; bottom: 0; width: 3px; margin-left: -1px; background: #fff;
  box-shadow: 0 0 4px #000; z-index: 650; pointer-events: none; }}
.hz-legend span {{ display: inline-block; width: 11px; height: 11px; margin-right: 4px;
  border: 1px solid #555; }}
</style></head>
<body><div id="hz-map"></div>
<script>{leaflet_js}</script>
<script id="hz-data" type="application/json">{data}</script>
<script>{script}</script>
</body></html>
"""

_SCRIPT = r"""
(function () {
  const D = JSON.parse(document.getElementById('hz-data').textContent);
  const map = L.map('hz-map', {zoomSnap: 0.25, attributionControl: false});
  map.fitBounds(D.bounds);
  L.control.scale({imperial: false}).addTo(map);
  ['hz-left', 'hz-right'].forEach(function (p, i) { map.createPane(p).style.zIndex = 400 + i; });
  let dateIndex = 0;
  const statics = Object.keys(D.overlays);
  function layerNames() { return Object.keys(D.dates[dateIndex].layers).concat(statics); }
  function urlOf(name) { return D.dates[dateIndex].layers[name] || D.overlays[name]; }
  function slug(s) { return s.toLowerCase().replace(/[^a-z0-9]+/g, '-'); }
  const sides = {};
  ['left', 'right'].forEach(function (side) {
    sides[side] = {name: null, layer: null};
  });
  function show(side, name) {
    const s = sides[side];
    if (s.layer) { map.removeLayer(s.layer); s.layer = null; }
    s.name = name;
    const url = urlOf(name);
    if (!url) return;
    s.layer = L.imageOverlay(url, D.bounds, {pane: 'hz-' + side,
      className: 'hz-layer hz-swipe-' + side + ' hz-layer-' + slug(name)}).addTo(map);
  }
  // static overlays in Leaflet's layer control, above the swiped pair
  const overlayLayers = {};
  statics.forEach(function (name) {
    overlayLayers[name] = L.imageOverlay(D.overlays[name], D.bounds,
      {opacity: 0.85, className: 'hz-layer hz-overlay hz-layer-' + slug(name)});
  });
  L.control.layers(null, overlayLayers, {collapsed: false, position: 'topright'}).addTo(map);

  const panel = L.control({position: 'topleft'});
  panel.onAdd = function () {
    const div = L.DomUtil.create('div', 'leaflet-bar');
    div.id = 'hz-panel';
    div.innerHTML = '<h1></h1>' +
      '<label>Date <select id="hz-date"></select></label>' +
      '<label>Left <select id="hz-left-select" class="hz-swipe-select"></select></label>' +
      '<label>Right <select id="hz-right-select" class="hz-swipe-select"></select></label>' +
      '<div id="hz-swipe" class="hz-swipe-control"><input id="hz-swipe-range" type="range" ' +
      'min="0" max="100" step="0.5" value="50" aria-label="swipe position"></div>' +
      '<div id="hz-legends"></div>';
    div.querySelector('h1').textContent = D.title;
    L.DomEvent.disableClickPropagation(div);
    L.DomEvent.disableScrollPropagation(div);
    return div;
  };
  panel.addTo(map);
  const divider = L.DomUtil.create('div', '', map.getContainer());
  divider.id = 'hz-divider';
  const dateSel = document.getElementById('hz-date');
  D.dates.forEach(function (d, i) { dateSel.add(new Option(d.label, i)); });
  function fillSides() {
    ['left', 'right'].forEach(function (side) {
      const sel = document.getElementById('hz-' + side + '-select');
      const keep = sides[side].name || D[side];
      sel.innerHTML = '';
      layerNames().forEach(function (n) { sel.add(new Option(n, n)); });
      sel.value = layerNames().indexOf(keep) >= 0 ? keep : layerNames()[0];
      show(side, sel.value);
    });
    clip();
  }
  const range = document.getElementById('hz-swipe-range');
  function clip() {
    const size = map.getSize();
    const x = size.x * range.value / 100;
    const nw = map.containerPointToLayerPoint([0, 0]);
    const se = map.containerPointToLayerPoint(size);
    const cx = map.containerPointToLayerPoint([x, 0]).x;
    function rect(v) { return 'rect(' + v.map(function (p) { return p + 'px'; }).join(',') + ')'; }
    map.getPane('hz-left').style.clip = rect([nw.y, cx, se.y, nw.x]);
    map.getPane('hz-right').style.clip = rect([nw.y, se.x, se.y, cx]);
    divider.style.left = x + 'px';
  }
  dateSel.addEventListener('change', function () { dateIndex = +dateSel.value; fillSides(); });
  ['left', 'right'].forEach(function (side) {
    document.getElementById('hz-' + side + '-select').addEventListener('change', function (e) {
      show(side, e.target.value); clip();
    });
  });
  range.addEventListener('input', clip);
  map.on('move zoom resize viewreset', clip);
  const legends = document.getElementById('hz-legends');
  Object.keys(D.legends).forEach(function (name) {
    const box = L.DomUtil.create('div', 'hz-legend', legends);
    box.innerHTML = '<b></b>';
    box.querySelector('b').textContent = name;
    Object.keys(D.legends[name]).forEach(function (label) {
      const row = L.DomUtil.create('div', '', box);
      const sw = L.DomUtil.create('span', '', row);
      sw.style.background = D.legends[name][label];
      row.appendChild(document.createTextNode(label));
    });
  });
  fillSides();
  window.hzMap = {map: map, sides: sides, layerNames: layerNames,
    dates: D.dates.map(function (d) { return d.label; })};
  document.body.setAttribute('data-hz-ready', '1');
})();
"""
