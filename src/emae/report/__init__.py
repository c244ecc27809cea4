"""``emae report``: one self-contained HTML page from emae output folders."""

from emae.report.render import write_report

__all__ = ["write_report"]
