"""``harden datasets upload|list|show|delete``: registered datasets of a running service (httpx
only). A job names one with ``harden submit MODEL --dataset dataset:<id>``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.service_client import KEY_OPTION, URL_OPTION, _client, _fail, _service_errors

datasets_app = typer.Typer(
    no_args_is_help=True,
    help="Register a dataset once and name it in jobs as dataset:<id> (a running service).",
)


@datasets_app.command("upload")
def upload(
    path: Path = typer.Argument(..., help="An .npz or a zip/tar of image folders."),
    name: str | None = typer.Option(None, help="A name to recognise it by (default: the file's)."),
    input_range: str | None = typer.Option(
        None,
        "--input-range",
        help="LOW,HIGH: float pixels must lie inside it (default 0,1; uint8 images fit any).",
    ),
    url: str = URL_OPTION,
    key: str | None = KEY_OPTION,
) -> None:
    """Upload and check a dataset once; print it (its reference is what jobs name)."""
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not there"
        _fail(
            f"{path} is {what}: upload one file, an .npz or a zip/tar of train/<class>/ and "
            "test/<class>/ image folders (a folder: cd FOLDER && zip -r ../data.zip train test)"
        )
    bounds = _input_range(input_range) if input_range is not None else None
    with _service_errors(url):
        dataset = _client(url, key).upload_dataset(path, name=name, input_range=bounds)
    typer.echo(json.dumps(dataset, indent=2))
    typer.echo(f"jobs name it: --dataset {dataset['reference']}", err=True)


@datasets_app.command("list")
def list_datasets(
    limit: int = typer.Option(20, min=1, max=200, help="Datasets per page."),
    offset: int = typer.Option(0, min=0, help="Datasets to skip (newest first)."),
    url: str = URL_OPTION,
    key: str | None = KEY_OPTION,
) -> None:
    """List your registered datasets, newest first: reference, size, name."""
    with _service_errors(url):
        page = _client(url, key).list_datasets(limit=limit, offset=offset)
    for dataset in page["items"]:
        typer.echo(f"{dataset['reference']}\t{dataset['size_bytes']}\t{dataset['name']}")
    if page["next"]:
        typer.echo(f"(more: --offset {offset + limit})", err=True)


@datasets_app.command("show")
def show(
    dataset_id: str = typer.Argument(..., help="dataset:<id> or the id."),
    url: str = URL_OPTION,
    key: str | None = KEY_OPTION,
) -> None:
    """Print a registered dataset's JSON."""
    with _service_errors(url):
        typer.echo(json.dumps(_client(url, key).dataset(dataset_id), indent=2))


@datasets_app.command("delete")
def delete(
    dataset_id: str = typer.Argument(..., help="dataset:<id> or the id."),
    url: str = URL_OPTION,
    key: str | None = KEY_OPTION,
) -> None:
    """Delete a registered dataset (refused while a queued or running job reads it)."""
    with _service_errors(url):
        _client(url, key).delete_dataset(dataset_id)
    typer.echo(f"deleted {dataset_id}")


def _input_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.replace("[", "").replace("]", "").split(","))
    except ValueError:
        _fail(f"--input-range {text!r} is not LOW,HIGH: use e.g. --input-range 0,1")
    if not low < high:
        _fail(f"--input-range {text!r} needs LOW < HIGH: use e.g. --input-range -1,1")
    return low, high
