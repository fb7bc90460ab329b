"""Reports a researcher can cite, built from stored result rows only.

``tables`` and ``plots`` turn the tidy rows of :class:`gradbench.results.ResultStore` into
tables (Markdown, LaTeX, CSV) and figures (PNG, PDF); ``published`` holds the papers' own figures,
shown beside ours and labelled as published; ``build`` writes them all with an index.
"""

from gradbench.report.build import Report, build_reports, check_writable

__all__ = ["Report", "build_reports", "check_writable"]
