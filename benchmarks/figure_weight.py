"""The prediction map's weight: JSON bytes the map event sends and the time to build it, static layers inline
vs served once (`geodemo/ui/map_layers.py`: the figure carries their URLs).

For each bundled example location: `result_figure` (counties, outline, 50%/90% credible regions, cells,
neighbours, point) built and serialised as `gr.Plot` does, the two variants interleaved.
Run: `python benchmarks/figure_weight.py [--repeats 15]`.
"""

from __future__ import annotations

import time

from _common import interleaved, parse_args, summary, table, write_result

from geodemo import maps
from geodemo.data import read_locations, view_paths
from geodemo.predict import Predictor
from geodemo.ui import map_layers
from geodemo.ui.predict_tab import result_figure
from geodemo.ui.settings import EXAMPLES_DIR


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=15)
    import gradio as gr

    predictor = Predictor.load()
    predictions = [predictor.predict({v * 90: p for v, p in view_paths(EXAMPLES_DIR, uid).items()})
                   for uid in read_locations(EXAMPLES_DIR).uuid]
    plot = gr.Plot()
    urls = {}
    map_layers.routes()
    urls.update(maps.LAYER_URLS)
    sizes = {"inline": [], "served": []}

    def build(variant: str):
        maps.LAYER_URLS.clear()
        if variant == "served":
            maps.LAYER_URLS.update(urls)
        for prediction in predictions:
            sizes[variant].append(len(plot.postprocess(result_figure(predictor, prediction)).plot))

    t0 = time.perf_counter()
    build("served")
    first_ms = 1000 * (time.perf_counter() - t0)
    times = interleaved({"inline": lambda: build("inline"), "served": lambda: build("served")},
                        args.repeats, args.warmup)
    stats = {name: summary([t / len(predictions) for t in ts]) for name, ts in times.items()}
    bytes_ = {name: sorted(set(s)) for name, s in sizes.items()}
    print(table(["static layers", "build + serialise p50 ms", "p95 ms", "JSON bytes (3 examples)"],
                [[k, s["p50_ms"], s["p95_ms"], bytes_[k]] for k, s in stats.items()]))
    out = write_result("figure_weight", {"repeats": args.repeats, "results": stats, "json_bytes": bytes_,
                                         "first_call_ms_3_figures": first_ms})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
