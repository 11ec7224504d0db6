"""``bench leaderboard build`` and ``bench leaderboard serve``: the static site from the store."""

from __future__ import annotations

from pathlib import Path

import click
from stbench.cli._console import console, err_console, quiet_library_warnings, store_option

DEFAULT_OUT = "stbench-leaderboard"


def _build_options(f):  # noqa: ANN001, ANN202
    for decorator in reversed((
        store_option,
        click.option("--reducer", default="pca", show_default=True,
                     help="Reducer the main table opens on (the page switches between all of them)."),
        click.option("--include-synthetic", is_flag=True,
                     help="Also show synthetic tasks (bench data demo), labelled SYNTHETIC, in their own section, "
                          "never ranked or averaged with real tasks."),
        click.option("--embeddings/--no-embeddings", default=True, show_default=True,
                     help="Build the embedding view (2-D projections of raw, PCA and BP-Booster embeddings; the slow part)."),
        click.option("--projection", type=click.Choice(["umap", "tsne"]), default="umap", show_default=True,
                     help="2-D projection of the embedding view (scanpy)."),
        click.option("--spatial-csv/--no-spatial-csv", default=True, show_default=True,
                     help="Write the spatial maps' values as CSV downloads, one per test sample (at the HEST grid's "
                          "size most of the site's bytes)."),
    )):
        f = decorator(f)
    return f


def _build(out: str, store: str | None, reducer: str, include_synthetic: bool, embeddings: bool, projection: str,
           spatial_csv: bool = True) -> Path:
    quiet_library_warnings()
    from rich.markup import escape
    from stbench.leaderboard import build_site
    from stbench.settings import store_root

    root = store_root(store)
    err_console().print(f"Building the leaderboard from {escape(str(root))} ...")
    report = build_site(root, Path(out), reducer=reducer, include_synthetic=include_synthetic, embeddings=embeddings,
                        projection=projection, spatial_csv=spatial_csv)
    shown = f"{report.n_shown} in the main views, {report.n_runs - report.n_shown} variants or older runs on task pages"
    console().print(f"wrote {len(report.pages)} pages to {escape(str(report.out))} from {report.n_runs} result sets "
                    f"({shown}; tasks: {escape(', '.join(report.tasks))})")
    if report.n_excluded_synthetic:
        console().print(f"[yellow]{report.n_excluded_synthetic} synthetic result set(s) left out; --include-synthetic "
                        "shows them in their own section[/]")
    for note in report.notes:
        console().print(f"[dim]{escape(note)}[/]")
    console().print(f"open {escape(str(report.out / 'index.html'))} or run `bench leaderboard serve --out {escape(out)}`")
    return report.out


@click.group("leaderboard")
def leaderboard_group() -> None:
    """A static leaderboard site from the store: encoders x tasks per reducer, reducer gains, per-gene PCC,
    spatial maps, embedding views and protocol sensitivity, with CSV downloads.

    \b
    Examples:
      bench leaderboard build                        # ./stbench-leaderboard/index.html, opens from disk
      bench leaderboard build --store /data/store --out site --no-embeddings
      bench leaderboard layouts --store /data/store   # the embedding view's layouts into the store's cache
      bench leaderboard serve --port 8000            # http://127.0.0.1:8000/
    """


@leaderboard_group.command("build")
@click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False),
              help="Folder to write the site to (a previous build there is replaced).")
@_build_options
def build_cmd(out, store, reducer, include_synthetic, embeddings, projection, spatial_csv):  # noqa: ANN001, ANN201
    """Write the self-contained site (no CDN, no network) from the store's complete runs."""
    _build(out, store, reducer, include_synthetic, embeddings, projection, spatial_csv)


@leaderboard_group.command("layouts")
@store_option
@click.option("--include-synthetic", is_flag=True, help="Also the synthetic tasks (bench data demo).")
@click.option("--projection", type=click.Choice(["umap", "tsne"]), default="umap", show_default=True,
              help="2-D projection of the embedding view (scanpy).")
def layouts_cmd(store, include_synthetic, projection):  # noqa: ANN001, ANN201
    """Compute the embedding view's layouts into the store's cache (STORE/cache/layouts/), keeping those already
    there; `build` reads them (and computes what is missing itself)."""
    quiet_library_warnings()
    from rich.markup import escape
    from stbench.leaderboard.layouts import compute_layouts
    from stbench.settings import store_root

    root = store_root(store)
    report = compute_layouts(root, include_synthetic=include_synthetic, method=projection)
    console().print(f"{len(report.computed)} layouts computed, {len(report.reused)} already in "
                    f"{escape(str(root / 'cache' / 'layouts'))}")
    if report.unwritable:
        console().print("[yellow]the store's cache could not be written (read-only?)[/]")


@leaderboard_group.command("serve")
@click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False),
              help="Folder of the site.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--build/--no-build", "build", default=None,
              help="Rebuild the site before serving. [default: build only when the folder has no site]")
@_build_options
def serve_cmd(out, port, build, store, reducer, include_synthetic, embeddings, projection, spatial_csv):  # noqa: ANN001, ANN201, PLR0913
    """Serve the site on http://127.0.0.1:PORT/ (local only) until Ctrl-C."""
    from stbench.errors import StbenchError
    from stbench.leaderboard import serve

    site = Path(out)
    if build or (build is None and not (site / "index.html").exists()):
        _build(out, store, reducer, include_synthetic, embeddings, projection, spatial_csv)
    elif not (site / "index.html").exists():
        raise StbenchError(f"no site in {site}: run `bench leaderboard build --out {out}` first, or drop --no-build")
    try:
        console().print(f"serving {site} on http://127.0.0.1:{port}/ (Ctrl-C stops)")
        serve(site, port=port)
    except OSError as exc:
        raise StbenchError(f"cannot serve on 127.0.0.1:{port} ({exc.strerror}); choose another --port") from None
    except KeyboardInterrupt:
        console().print("stopped")
