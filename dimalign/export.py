"""`dimalign export RUN DIR`: a run's config, metrics CSV, figures, checkpoint and a short
HTML report, readable without dimalign (figures are self-contained HTML)."""

from __future__ import annotations

import csv
import html
import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from dimalign import checked, plots
from dimalign.kinds import get_kind
from dimalign.metric_table import TABLE, ordered
from dimalign.paths import PathError
from dimalign.run_files import (
    CHECKPOINT,
    FILM,
    FILM_UMAP,
    GEOMETRY,
    RESULT,
    TELEMETRY,
    WEIGHTS,
)
from dimalign.store import Store, StoreError


def csv_text(rows: list[dict]) -> str:
    """Rows of one shape as CSV text (the dashboard's downloads)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def destination(dest: Path | str) -> Path:
    """The folder an export writes into, created if missing; a PathError names what is wrong
    (an empty path, a file, a place that cannot hold a folder)."""
    if not str(dest).strip():  # Path("") would be the current folder
        raise PathError("export needs a folder to write into, got an empty path")
    path = Path(dest).expanduser()
    if path.exists() and not path.is_dir():
        raise PathError(f"{str(path)!r} is a file; export writes a folder of files: name a "
                        "new or existing folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PathError(f"cannot create the folder {str(path)!r}: "
                        f"{err.strerror or err}") from None
    return path


def _say(text: str) -> None:
    print(f"dimalign: {text}", file=sys.stderr, flush=True)


def export_run(store: Store, run_id: str, dest: Path | str,
               say: Callable[[str], None] = _say) -> list[Path]:
    """Write a run's files into the folder `dest`; returns what was written. A destination
    that cannot be written raises PathError, naming the file; a run file that fails its sha256
    is set aside, left out and said (`say`)."""
    run = store.get(run_id)
    kind = get_kind(run.kind)
    if not kind.experiment:  # its file lies beside the run it worked on: export that one
        raise StoreError(f"run {run.id} is a {kind.title.lower()} job of run {run.parent_id}; "
                         f"export that run (dimalign export {run.parent_id} DIR)")
    dest = destination(dest)
    try:
        return _export(store, run, dest, say)
    except OSError as err:
        where = err.filename or dest
        raise PathError(f"export into {str(dest)!r} failed at {str(where)!r}: "
                        f"{err.strerror or err}") from None


def _export(store: Store, run, dest: Path, say: Callable[[str], None]) -> list[Path]:
    written = []

    config = dest / "config.json"
    config.write_text(json.dumps({"run": run.id, "parent": run.parent_id, "owner": run.owner,
                                  "preset": run.preset, "method": run.method,
                                  "status": run.status, "config": run.config}, indent=1))
    written.append(config)

    metrics = dest / "metrics.csv"
    with open(metrics, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["step", "key", "value", "wall_time"])
        out.writerows(store.metric_rows(run.id))
    written.append(metrics)

    figures = dest / "figures"
    figures.mkdir(exist_ok=True)
    result = run.result or {}
    refs = {k: v for k, v in result.get("models", {}).items() if k in ("original", "retrained")}
    curves_fig = plots.telemetry_figure(store.curves(run.id), refs)
    curves_fig.write_html(figures / "curves.html", include_plotlyjs=True)
    written.append(figures / "curves.html")
    geometry_path = run.folder / GEOMETRY
    spectra_fig = None
    if geometry_path.exists():
        from dimalign.artifacts import load_bundle

        try:
            spectra_fig = plots.spectra_figure(load_bundle(geometry_path))
        except checked.DamagedFile as err:
            say(f"{err}; the export has no spectra figure")
        else:
            spectra_fig.write_html(figures / "spectra.html", include_plotlyjs=True)
            written.append(figures / "spectra.html")

    from dimalign.methods.film import finish_saved, frames_left

    if run.status == "done" and frames_left(run.folder):  # its film job has not run yet
        try:
            finish_saved(run.folder)
        except checked.DamagedFile as err:  # set aside: the film goes as it is
            say(f"{err}; the film's last frames are not in the export")
    for name in (WEIGHTS, CHECKPOINT, RESULT, TELEMETRY, FILM, FILM_UMAP):
        if (run.folder / name).exists():
            try:
                checked.verify(run.folder / name)
            except checked.DamagedFile as err:
                say(f"{err}; it is not exported")
                continue
            shutil.copy2(run.folder / name, dest / name)
            written.append(dest / name)

    report = dest / "report.html"
    report.write_text(_report(run, result, curves_fig, spectra_fig))
    written.append(report)
    return written


def _report(run, result: dict, curves_fig, spectra_fig) -> str:
    models = result.get("models", {})
    names = list(models)
    keys = ordered(k for row in models.values() for k in row)

    def cell(v):
        return "–" if v is None else (f"{v:.4f}" if isinstance(v, float) else html.escape(str(v)))

    def head(k):  # the table's description on hover
        about = f"{TABLE[k].title}: {TABLE[k].description}" if k in TABLE else k
        return f'<th title="{html.escape(about)}">{html.escape(k)}</th>'

    rows = "".join(f"<tr>{head(k)}"
                   + "".join(f"<td>{cell(models[n].get(k))}</td>" for n in names) + "</tr>"
                   for k in keys)
    table = (f"<table><tr><th>metric</th>{''.join(f'<th>{html.escape(n)}</th>' for n in names)}"
             f"</tr>{rows}</table>") if names else "<p>No metrics (the run did not finish).</p>"
    figs = curves_fig.to_html(full_html=False, include_plotlyjs=True)
    if spectra_fig is not None:
        figs += spectra_fig.to_html(full_html=False, include_plotlyjs=False)
    params = html.escape(json.dumps(result.get("params", {})))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>dimalign run {run.id}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>dimalign run {run.id}</h1>
<p>preset <b>{html.escape(run.preset)}</b> · method <b>{html.escape(run.method)}</b> · status
<b>{run.status}</b> · owner {html.escape(run.owner)}{' · forked from ' + run.parent_id
                                                      if run.parent_id else ''}</p>
<p>knobs: <code>{params}</code></p>
{f'<p style="color:#b00">error: {html.escape(run.error)}</p>' if run.error else ''}
<h2>Metrics</h2>{table}<h2>Figures</h2>{figs}</body></html>"""
