"""The static leaderboard site, built from the store (`bench leaderboard build`, `bench leaderboard serve`).

- `stbench.leaderboard.data`: the catalog's complete result sets as plain data (main tables, reducer gains,
  protocol sensitivity, per-gene PCC), synthetic tasks in their own section.
- `stbench.leaderboard.maps`: spatial maps (measured vs predicted per spot) and the embedding view.
- `stbench.leaderboard.layouts`: the embedding view's 2-D layouts, computed once each and cached in the store.
- `stbench.leaderboard.slices`: a spatial page's values as one small file per (sample, gene), loaded when shown.
- `stbench.leaderboard.site`, `stbench.leaderboard.figures`: the HTML pages, CSV downloads and assets (plotly.js
  copied from the installed plotly package); the pages work opened from disk.
- `stbench.leaderboard.published`: published reference numbers, shown beside ours and never ranked.
- `stbench.leaderboard.rankings`, `stbench.leaderboard.stats`: a task page's rankings with a paired test between
  neighbours (Holm-corrected) and Kendall's tau between alpha rules; `stbench.leaderboard.sweeps`: the
  alpha-sensitivity curves of ``--alpha sweep`` runs; `stbench.leaderboard.task_page`: the task page.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stbench.leaderboard.site import BuildReport

__all__ = ["build_site", "make_server", "serve"]


def build_site(store_root: Path, out: Path, **options: object) -> BuildReport:
    """Build the site for the store at ``store_root`` into ``out`` (see `stbench.leaderboard.site.build_site`)."""
    from stbench.leaderboard.site import build_site as build

    return build(store_root, out, **options)  # type: ignore[arg-type]


def make_server(out: Path, *, port: int = 8000, host: str = "127.0.0.1"):  # noqa: ANN201
    """An HTTP server for the folder ``out`` on ``host:port`` (port 0: any free port); call ``serve_forever``."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the address is printed once instead
            pass

    return http.server.ThreadingHTTPServer((host, port), functools.partial(Quiet, directory=str(out)))


def serve(out: Path, *, port: int = 8000, host: str = "127.0.0.1") -> None:
    """Serve the folder ``out`` until interrupted."""
    with make_server(out, port=port, host=host) as server:
        server.serve_forever()
