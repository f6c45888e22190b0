"""Write assets/examples/panorama.jpg: the first bundled example location's four views stitched into a 2:1
equirectangular panorama centred on north (grey above and below the views), for the Panorama tab's example.

Usage (repo root): PYTHONPATH=. .venv/bin/python scripts/example_panorama.py
"""

from geodemo.data import VIEW_HEADINGS, read_locations, view_paths
from geodemo.images import encode_jpeg, load_rgb
from geodemo.panorama import views_to_panorama
from geodemo.ui.settings import EXAMPLES_DIR

OUT = EXAMPLES_DIR / "panorama.jpg"

if __name__ == "__main__":
    uid = read_locations(EXAMPLES_DIR).uuid.iloc[0]
    paths = view_paths(EXAMPLES_DIR, uid)
    views = {VIEW_HEADINGS[v]: load_rgb(path) for v, path in paths.items()}
    OUT.write_bytes(encode_jpeg(views_to_panorama(views), quality=85))
    print(f"wrote {OUT} from location {uid}")
