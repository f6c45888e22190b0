"""Browser latency of a Predict click vs the `/predict` API and the REST route, in the same run.

Starts `python app.py` on the bundled checkpoint (as bench_api_latency.py does: free port, HF_HUB_OFFLINE=1,
GEODEMO_THREADS = app.py's rule or --threads), opens the Predict tab in Debian's headless chromium
(Playwright, `executable_path=/usr/bin/chromium`, 1300 x 1000 px) and interleaves, per repetition:
  browser   4 real sample views uploaded (untimed; the new photos clear the old result), then, timed in the
            page from the Predict click: the summary's heading on screen (`summary`), the map drawn with
            the prediction's points (`map`: the Plotly trace "prediction" is in the MapLibre style and the
            map is loaded, plus one animation frame) and the Grad-CAM gallery shown (`gradcam`); the
            repetition ends when the whole chain (Grad-CAM, neighbours) has settled;
  api       `Client(url, ssl_verify=False).predict(4 views, api_name="/predict")` (gradio_client);
  rest      `POST /api/v1/predict`, the 4 views as multipart fields on one kept-alive `httpx.Client`.
The locations rotate through the first --locations sample locations. The size of the prediction figure's
JSON (the map event's response body, from the page's resource timing) is recorded as well.
Run: `python benchmarks/browser_latency.py [--repeats 15] [--threads N] [--locations 5]`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import numpy as np
from _common import (
    SAMPLE,
    checkpoint_path,
    interleaved,
    parse_args,
    sample_uuids,
    stop,
    summary,
    table,
    write_result,
)
from bench_api_latency import connect, start_app

from geodemo.data import view_paths
from geodemo.ui.app import CONCURRENCY
from geodemo.ui.rest import FIELDS, PATH

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
# Clicks Predict and resolves with ms from the click to each milestone (rAF polling: ~16 ms resolution).
CLICK_AND_TIME = """
(cams) => new Promise((resolve) => {
  const t0 = performance.now();
  const start = t0;
  const out = {};
  const mapDrawn = () => {
    const gd = document.querySelector('#predict-map .js-plotly-plot');
    const sub = gd && gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map._subplot;
    const map = sub && sub.map;
    const trace = gd && gd._fullData && gd._fullData.find((t) => t.name === 'prediction');
    if (!map || !trace || !map.loaded()) return false;
    const order = map.getLayersOrder ? map.getLayersOrder() : map.style._order;  // no style serialisation
    return order.some((id) => id.startsWith('plotly-trace-layer-' + trace.uid));
  };
  const tick = () => {
    const now = performance.now() - t0;
    const h3 = document.querySelector('#predict-summary h3');
    if (out.summary === undefined && h3 && h3.innerText.includes('°')) out.summary = now;
    const gd = document.querySelector('#predict-map .js-plotly-plot');
    if (out.figure === undefined && gd && gd.data && gd.data.some((t) => t.name === 'prediction')) {
      out.figure = now;  // the figure reached Plotly (after the server and the transfer)
    }
    if (out.map === undefined && mapDrawn()) out.map = now;
    const gallery = document.querySelector('#predict-cams');
    if (out.gradcam === undefined && gallery && gallery.offsetParent !== null
        && gallery.querySelector('img')) out.gradcam = now;
    const photos = document.querySelector('#predict-neighbours img');
    if (out.neighbours === undefined && photos) out.neighbours = now;
    const all = out.summary !== undefined && out.map !== undefined && (out.gradcam !== undefined || !cams);
    if (all && (out.neighbours !== undefined || now - Math.max(out.map, out.gradcam || 0) > 1500)) {
      // the largest response of the click's non-queued events (/run/predict) is the map's: its bytes
      const sizes = performance.getEntriesByType('resource')
        .filter((e) => e.name.includes('/run/predict') && e.startTime >= start).map((e) => e.decodedBodySize);
      out.figure_bytes = Math.max(0, ...sizes);
      resolve(out);
    } else if (now > 120000) {
      out.timeout = true;
      resolve(out);
    } else {
      requestAnimationFrame(tick);
    }
  };
  performance.setResourceTimingBufferSize(10000);
  performance.clearResourceTimings();  // the buffer (250 by default) fills up with the uploads
  document.querySelector('#predict-button').click();
  requestAnimationFrame(tick);
})
"""


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=15, engine="auto", locations=5, no_gradcam=False)
    threads = args.threads or max(1, (os.cpu_count() or 1) // CONCURRENCY)  # app.py's rule
    path, note = checkpoint_path()
    locations = []
    for uid in sample_uuids(args.locations):
        paths = view_paths(SAMPLE, uid)
        locations.append([str(paths[v]) for v in sorted(paths)])
    assert all(len(v) == 4 for v in locations)

    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright

    app, url, log = start_app(path, threads, args.engine)
    times = {"summary": [], "figure": [], "map": [], "gradcam": [], "map_after_summary": []}
    figure_bytes = []
    try:
        connect(app, url, log)
        client = Client(url, verbose=False, ssl_verify=False)
        rest = httpx.Client(base_url=url.rstrip("/"), timeout=120)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.set_default_timeout(120_000)

            page.goto(url)
            page.wait_for_selector("#predict-button")
            if args.no_gradcam:  # to see what Grad-CAM, computed while the map draws, costs the map
                page.get_by_label("Grad-CAM overlays").uncheck()
            turn = [0]

            def browser_run():
                views = locations[turn[0] % len(locations)]
                turn[0] += 1
                for name, view in zip(FIELDS, views):
                    page.locator(f"#predict-{name} input[type=file]").set_input_files(view)
                for name in FIELDS:
                    page.locator(f"#predict-{name} img").first.wait_for()
                page.wait_for_function("!document.querySelector('#predict-summary h3')")
                time.sleep(0.3)  # the uploads' change events (clear the result) have settled
                out = page.evaluate(CLICK_AND_TIME, not args.no_gradcam)
                if out.get("timeout"):
                    raise TimeoutError(f"the Predict chain did not finish: {out}")
                figure_bytes.append(out["figure_bytes"])
                for key in ("summary", "figure", "map", "gradcam"):
                    times[key].append(out.get(key, float("nan")))
                times["map_after_summary"].append(out["map"] - out["summary"])

            def api_run():
                client.predict(*[handle_file(v) for v in locations[0]], api_name="/predict")

            payload = [(name, (Path(v).name, Path(v).read_bytes(), "image/jpeg"))
                       for name, v in zip(FIELDS, locations[0])]

            def rest_run():
                rest.post(PATH, files=payload).raise_for_status()

            for _ in range(3):  # the first calls load the model (and the ONNX backbone)
                api_run()
            subjects = {"browser": browser_run, "api": api_run, "rest": rest_run}
            walls = interleaved(subjects, args.repeats, args.warmup)
            for key in times:
                times[key] = times[key][args.warmup:]
            figure_bytes = figure_bytes[args.warmup:]
            times["api"], times["rest"] = walls["api"], walls["rest"]
            page.set_viewport_size({"width": 1300, "height": 1000})
            browser.close()
        rest.close()
    finally:
        stop(app)

    times = {name: t for name, t in times.items() if not np.isnan(t).all()}  # no Grad-CAM: no gradcam times
    stats = {name: summary(t) for name, t in times.items()}
    api = stats["api"]["p50_ms"]
    ratios = {
        "summary/api p50": stats["summary"]["p50_ms"] / api,
        "summary/rest p50": stats["summary"]["p50_ms"] / stats["rest"]["p50_ms"],
        "map after summary p50 (ms)": stats["map_after_summary"]["p50_ms"],
        "map after summary p95 (ms)": stats["map_after_summary"]["p95_ms"],
    }
    load = os.getloadavg()
    print(f"checkpoint: {note}; threads {threads} (server); {args.repeats} interleaved repeats; "
          f"load average {load[0]:.2f}\n")
    print(table(["subject", "p50 ms", "p95 ms", "p50 / api p50"],
                [[k, s["p50_ms"], s["p95_ms"], s["p50_ms"] / api] for k, s in stats.items()]))
    print()
    print(table(["ratio", "value"], [[k, v] for k, v in ratios.items()]))
    print(f"\nthe map event's response (the figure JSON): median {int(np.median(figure_bytes))} bytes")
    out = write_result("browser_latency" + ("_no_gradcam" if args.no_gradcam else ""), {
        "checkpoint": note, "threads": threads, "gradcam": not args.no_gradcam, "repeats": args.repeats,
        "load_avg_end": list(load),
        "targets": {"summary/api p50": 2.0, "map after summary (ms)": 1000},
        "results": stats, "ratios": ratios, "figure_json_bytes": figure_bytes, "times_ms": times,
    })
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
