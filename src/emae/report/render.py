"""Render the report: collect the sections of the given outputs, fill the jinja2 template.

The page embeds every image as a ``data:`` URI and loads nothing from the network, so the one
file can be mailed or archived as it is.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emae import __version__
from emae.errors import EmaeError
from emae.io.atomic import atomic_file, check_writable
from emae.report.comparison import compare_section
from emae.report.compression import compression_section
from emae.report.detection import detect_section
from emae.report.evaluation import classifier_section
from emae.report.latent_space import latent_section
from emae.report.reproducibility import reproducibility_section
from emae.report.restoration import denoise_section, repair_section
from emae.report.sections import anomaly_section, autoencoder_section, data_section
from emae.report.sources import find_runs

logger = logging.getLogger(__name__)


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (its generator tag), safe to replace."""
    if not (path.is_file() and path.suffix == ".html"):
        return False
    with path.open("rb") as f:
        return GENERATOR in f.read(4096)


GENERATOR = b'<meta name="generator" content="emae report">'  # in the template's head


def build_sections(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The report's sections for the outputs ``paths`` (see :mod:`emae.report.sections`)."""
    runs = find_runs(paths)
    sections = [data_section(runs)]
    ae = runs.first("autoencoder")
    if ae is not None:
        sections += [autoencoder_section(runs, ae), anomaly_section(runs, ae)]
    clf, evaluation = runs.first("classifier"), runs.first("evaluation")
    if clf is not None or evaluation is not None:
        sections.append(classifier_section(runs, clf, evaluation))
    for folder in runs.folders["compare"]:
        sections.append(compare_section(folder))
    for folder in runs.folders["detect"]:
        sections.append(detect_section(folder))
    for folder in runs.folders["denoise"]:
        sections.append(denoise_section(folder, None))
    for folder in runs.folders["repair"]:
        sections.append(repair_section(folder))
    sections.append(
        latent_section(
            runs.folders["latent-map"], runs.folders["map-apply"], runs.folders["generate"]
        )
    )
    sections.append(compression_section(runs.folders["compressed"]))
    configured = [f for kind in ("autoencoder", "classifier") for f in runs.folders[kind]]
    sections.append(reproducibility_section(runs, configured))
    sections = [s for s in sections if s is not None and s["blocks"]]
    highlights = [item for s in sections for item in s.get("highlights", [])]
    alerts = [("", line) for s in sections for line in s.get("alerts", [])]
    summary: list[dict[str, Any]] = []
    if alerts:
        title = "Read before trusting the results"
        summary.append({"type": "warning", "id": "summary", "title": title, "items": alerts})
    if highlights:
        summary.append({"type": "kv", "caption": "Key results", "items": highlights})
    if summary:
        sections.insert(0, {"id": "summary", "title": "Summary", "blocks": summary})
    return sections


def render_html(sections: list[dict[str, Any]], sources: Sequence[str], title: str) -> str:
    """The HTML page of ``sections``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("emae.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(
        title=title,
        version=__version__,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        sources=list(sources),
        sections=sections,
    )


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    title: str = "emae report",
    overwrite: bool = False,
) -> Path:
    """Write one self-contained HTML report of emae output folders.

    Parameters
    ----------
    paths
        Pipeline or demo run folders, sample data, autoencoder or classifier folders,
        evaluation or comparison folders, detect ``.zarr`` stores, in any combination.
    out
        The ``.html`` file to write (atomically).
    title
        Page title.
    overwrite
        Replace an existing report (nothing else is replaced).

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    if out.suffix != ".html":
        raise EmaeError(f"{out}: the report must be an .html file")
    check_writable(out, overwrite=overwrite, replaceable=_is_report, kind="an emae report")
    sections = build_sections(paths)
    html = render_html(sections, [str(p) for p in paths], title)
    with atomic_file(out, overwrite=True) as tmp:
        tmp.write_text(html, encoding="utf-8")
    logger.info("wrote %s (%.1f MB, %d sections)", out, len(html) / 1e6, len(sections))
    return out
