"""``report.html``: a batch's worklist page in its output folder (beyond the paper).

The studies in the order of ``scores.csv`` (highest study score first), each with its overview image, its scores,
lesion volume, whether a calibration fitted (a z-map was made), how it was segmented and links to its outputs; then
the studies that failed, each with its one-line reason from ``failures.json``. The page is one HTML file with
relative links and images, no script and nothing fetched from the network, so it works from the folder or a copy of
it; a table with a caption, column and row headers, and alt text on every image.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
from pathlib import Path

from scripts.files import atomic_write_bytes
from scripts.outputs import OVERVIEW_FILE, STUDY_FILES, ZMAP_FILE
from scripts.triage import SCORES_FILE

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2rem; color: #1a1a1a;
       background: #fff; max-width: 1400px; }
h1 { font-size: 1.45rem; margin: 0 0 .3rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem; }
p.note { color: #444; margin: .2rem 0 1rem; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; font-weight: 600; padding: .4rem 0; }
th, td { border: 1px solid #c8c8c8; padding: .35rem .5rem; vertical-align: top; text-align: left; }
thead th { background: #eef1f5; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.overview img { width: 100%; max-width: 520px; height: auto; display: block; }
ul.files { margin: 0; padding-left: 1rem; }
a { color: #0b57d0; } a:focus, a:hover { outline: 2px solid #0b57d0; }
"""


def _number(text: str, digits: int = 4) -> str:
    try:
        return f"{float(text):.{digits}g}"
    except (TypeError, ValueError):
        return html.escape(str(text or "-"))


class WorklistPage:
    """Write ``report.html`` for ``output_dir`` from ``scores.csv``, each study's ``segmentation.json`` and files, and
    ``failures.json`` (see the module docstring).

    Args:
        output_dir: the run's output folder.
        method: the method's name, for the title.
        rank: this process's rank under torchrun: only rank 0 writes the page (after ``ScoresTable.write``, where the
            ranks meet, so every study is on disk).
    """

    def __init__(self, output_dir: str | os.PathLike, method: str = "ANDi", rank: int = 0) -> None:
        self.output_dir = Path(output_dir)
        self.method = method
        self.rank = int(rank)

    def scores(self) -> list[dict[str, str]]:
        path = self.output_dir / SCORES_FILE
        if not path.is_file():
            return []
        with path.open(newline="") as f:
            return list(csv.DictReader(f))

    def failures(self) -> list[dict[str, str]]:
        path = self.output_dir / "failures.json"
        try:
            return list(json.loads(path.read_text()).get("failed", []))
        except (OSError, ValueError, AttributeError):
            return []

    def study_row(self, row: dict[str, str]) -> str:
        name = row["study"]
        folder = self.output_dir / name
        link = html.escape(name, quote=True)
        calibrated = (folder / ZMAP_FILE).is_file()
        rule = row.get("score_rule", "")
        rejected = row.get("rejected", "") == "True"
        segmentation = html.escape(row.get("segmentation_rule", "") or "-") + (
            " (rejected by the guard: written empty)" if rejected else ""
        )
        files = [f for f in STUDY_FILES if f != OVERVIEW_FILE and (folder / f).is_file()]
        links = "".join(f'<li><a href="{link}/{html.escape(f)}">{html.escape(f)}</a></li>' for f in files)
        if (folder / OVERVIEW_FILE).is_file():
            alt = (f"Overview of study {name}: FLAIR, anomaly map and segmentation on the axial slices where the map "
                   "peaks")  # fmt: skip
            image = (f'<a href="{link}/{OVERVIEW_FILE}"><img src="{link}/{OVERVIEW_FILE}" '
                     f'alt="{html.escape(alt, quote=True)}" loading="lazy"></a>')  # fmt: skip
        else:
            image = "no overview"
        return (
            f'<tr><td class="num">{html.escape(row.get("rank", ""))}</td><th scope="row">{html.escape(name)}</th>'
            f'<td class="num">{_number(row.get("score", ""))}<br><small>{html.escape(rule)}</small></td>'
            f'<td class="num">{_number(row.get("lesion_volume_ml", ""), 3)}</td>'
            f"<td>{'yes' if calibrated else 'no'}</td><td>{segmentation}</td>"
            f'<td class="overview">{image}</td><td><ul class="files">{links}</ul></td></tr>'
        )

    def render(self) -> str:
        rows = self.scores()
        failures = self.failures()
        title = f"{self.method} worklist: {len(rows)} studies ranked, {len(failures)} failed"
        body = "\n".join(self.study_row(r) for r in rows) or '<tr><td colspan="8">no study scored</td></tr>'
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><main>",
            f"<h1>{html.escape(title)}</h1>",
            '<p class="note">Research output of an unsupervised anomaly detector, not a medical device. Studies are '
            f'ranked by their study score, highest first, as in <a href="{SCORES_FILE}">{SCORES_FILE}</a>. '
            "Calibrated: a calibration fitted these settings and weights, so a z-map was made.</p>",
            '<table id="worklist"><caption>Studies ranked by study score</caption><thead><tr>'
            '<th scope="col">Rank</th><th scope="col">Study</th><th scope="col">Study score</th>'
            '<th scope="col">Lesion volume (ml)</th><th scope="col">Calibrated</th><th scope="col">Segmentation</th>'
            '<th scope="col">Overview</th><th scope="col">Outputs</th></tr></thead>',
            f"<tbody>{body}</tbody></table>",
        ]
        if failures:
            items = "".join(
                f'<tr><th scope="row">{html.escape(str(f.get("study", "?")))}</th>'
                f"<td>{html.escape(str(f.get('message', '')))}</td></tr>"
                for f in failures
            )
            parts += [
                '<h2 id="failures">Failed studies</h2>',
                '<table id="failed"><caption>Studies that failed, with the reason</caption><thead><tr>'
                f'<th scope="col">Study</th><th scope="col">Reason</th></tr></thead><tbody>{items}</tbody></table>',
            ]
        parts.append("</main></body></html>\n")
        return "\n".join(parts)

    def write(self) -> Path | None:
        """Write ``report.html`` atomically; returns its path (None on a rank other than 0)."""
        if self.rank != 0:
            return None
        path = atomic_write_bytes(self.render().encode("utf-8"), self.output_dir / REPORT_FILE)
        logger.info("worklist page %s", path)
        return path
