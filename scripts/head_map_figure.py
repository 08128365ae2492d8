"""docs/img/head_map.png: the kNN head-map of a policy on expert demonstrations of one task, screenshotted in
headless Chromium (what a person opening the discovery's headmap.html sees).

    python scripts/head_map_figure.py --task place/novel_color --out docs/img/head_map.png
    python scripts/head_map_figure.py --demos runs/grid/work/place_novel_color/seed0/demos ...   # reuse a collection

Collects ``--demos-n`` expert demonstrations (unless ``--demos`` names a collected folder), runs the released kNN
selection (top 7), writes the page beside the PNG's work folder and screenshots it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="default")
    p.add_argument("--task", default="place/novel_color")
    p.add_argument("--demos", help="a collected demonstration folder to reuse")
    p.add_argument("--demos-n", type=int, default=20)
    p.add_argument("--top-k", type=int, default=7)
    p.add_argument("--work", default="runs/head_map_figure")
    p.add_argument("--out", default="docs/img/head_map.png")
    p.add_argument("--size", default="1200,450", help="browser window, width,height")
    args = p.parse_args()

    from robosteer.app.experiment import collect_demos
    from robosteer.app.policy import policy_cameras
    from robosteer.circuits.config import DiscoverConfig
    from robosteer.circuits.discover import discover
    from robosteer.cli import configure_logging
    from robosteer.data.dataset import DemoDataset
    from robosteer.models import load_vla
    from robosteer.viz import save_html

    configure_logging()
    work = Path(args.work)
    demos = (DemoDataset(args.demos) if args.demos else
             collect_demos(args.task, args.demos_n, work / "demos", cameras=policy_cameras(args.policy)))
    found = discover(load_vla(args.policy), demos, DiscoverConfig(method="knn", top_k=args.top_k), out=work / "knn")
    page = save_html(found.scores.plot(column=found.column, mask=found.mask), work / "head_map.html",
                     self_contained=True)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    out = Path(args.out).resolve()
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
                    f"--window-size={args.size}", page.resolve().as_uri()], check=True, capture_output=True,
                   timeout=180)
    print(f"{out}: {', '.join(str(h) for h in found.mask.heads)}")


if __name__ == "__main__":
    main()
