"""Build assets/geo/neighbours_land.png: land outside Croatia (the neighbours) for the label map.

Source: ../shared/geo/globe_hr.npz (GLOBE 30" DEM, public domain; sea = 0 m). A pixel is painted when its
elevation is above 0 m and its centre lies outside Croatia's outline; everything else stays transparent,
so the map's sea colour and the vector counties show through.
Run: .venv/bin/python scripts/make_neighbours_png.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

from geodemo import geo

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "geo" / "globe_hr.npz"
OUT = geo.GEO_DIR / "neighbours_land.png"
COLOUR = (226, 221, 208)  # warm grey: land, clearly not sea and not Croatia


def main() -> None:
    dem = np.load(SOURCE)
    elev, res = dem["elev"], float(dem["res"])
    rows, cols = elev.shape
    lat = float(dem["lat_max"]) - (np.arange(rows) + 0.5) * res
    lon = float(dem["lon_min"]) + (np.arange(cols) + 0.5) * res
    lon_grid, lat_grid = np.meshgrid(lon, lat)
    land = elev > 0
    croatia = np.zeros_like(land)
    croatia[land] = geo.distance_to_croatia_km(lat_grid[land], lon_grid[land]) <= 0.0
    rgba = np.zeros((rows, cols, 4), np.uint8)
    rgba[land & ~croatia] = (*COLOUR, 255)
    Image.fromarray(rgba, "RGBA").save(OUT, optimize=True)
    print(
        f"wrote {OUT} ({OUT.stat().st_size} bytes); "
        f"bounds lat {lat[-1] - res / 2:.4f}..{lat[0] + res / 2:.4f}, "
        f"lon {lon[0] - res / 2:.4f}..{lon[-1] + res / 2:.4f}"
    )


if __name__ == "__main__":
    main()
