"""The ``panthera`` command."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from panthera.catalog.demo import SeedReport
    from panthera.kernel.settings import Settings

app = typer.Typer(help="Panthera: a cloud-native commerce platform.", no_args_is_help=True)

HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option(help="Port to listen on.")]
DataDirOption = Annotated[
    Path | None, typer.Option(help="Where the embedded shape keeps its databases and files.")
]


def _settings(data_dir: Path | None = None):  # type: ignore[no-untyped-def]
    from panthera.kernel.settings import get_settings

    if data_dir is not None:
        os.environ["PANTHERA_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
    settings: Settings = get_settings()
    return settings


def _serve(asgi_app: object, host: str, port: int, log_level: str) -> None:
    import uvicorn

    uvicorn.run(
        asgi_app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        # Longer than any client's idle keep-alive (the gateway keeps 30 s): the
        # client, not the server, closes an idle connection, so a request is never
        # sent down a connection the server is closing at that moment.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=20,
        log_level=log_level.lower(),
    )


@app.command()
def run(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    data_dir: DataDirOption = None,
) -> None:
    """Run every service and the gateway in one process on the embedded defaults."""
    from panthera.kernel.observability import configure_logging
    from panthera.runtime.apps import embedded_app

    settings = _settings(data_dir)
    configure_logging(settings.log_level, json=settings.log_json)
    _serve(embedded_app(settings), host, port, settings.log_level)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="gateway, or one service: auth, users, ...")],
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
) -> None:
    """Run one service (or the gateway) as its own process."""
    from panthera.kernel.observability import configure_logging
    from panthera.runtime.apps import service_app

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        asgi_app = service_app(settings, service)
    except (KeyError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _serve(asgi_app, host, port, settings.log_level)


@app.command()
def migrate(
    service: Annotated[str | None, typer.Argument(help="One service; all when omitted.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Bring the databases to their newest schema."""
    from panthera.runtime.platform import Platform
    from panthera.runtime.registry import SERVICE_NAMES

    settings = _settings(data_dir)
    names = (service,) if service else SERVICE_NAMES
    if service and service not in SERVICE_NAMES:
        typer.echo(f"error: unknown service {service!r}", err=True)
        raise typer.Exit(2)

    async def go() -> None:
        platform = Platform(settings, names)
        try:
            await platform.migrate()
        finally:
            for runtime in platform.runtimes.values():
                await runtime.database.dispose()

    asyncio.run(go())
    typer.echo(f"migrated: {', '.join(names)}")


@app.command("make-migration", hidden=True)
def make_migration(
    service: Annotated[str, typer.Argument(help="The service whose models changed.")],
    message: Annotated[str, typer.Option("-m", "--message", help="What the revision does.")],
) -> None:
    """Write a new migration for a service from its models (for developers)."""
    import tempfile

    from panthera.kernel.migrations import new_revision
    from panthera.runtime.registry import definition

    service_definition = definition(service)
    with tempfile.TemporaryDirectory() as scratch:
        new_revision(
            service_definition.migrations_dir,
            service,
            f"sqlite:///{scratch}/{service}.sqlite3",
            message,
        )


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The administrator's email address.")],
    password: Annotated[
        str, typer.Option(help="At least 8 characters.", prompt=True, hide_input=True)
    ],
    first_name: Annotated[str, typer.Option(help="First name.")] = "Admin",
    last_name: Annotated[str, typer.Option(help="Last name.")] = "User",
    data_dir: DataDirOption = None,
) -> None:
    """Create an administrator (or give an existing account the ADMIN role)."""
    from panthera.runtime.admin import create_administrator

    settings = _settings(data_dir)
    try:
        user_id, created = asyncio.run(
            create_administrator(settings, email, password, first_name, last_name)
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    verb = "created" if created else "promoted"
    typer.echo(f"administrator {verb}: {user_id}")


async def seed_demo(settings: Settings, products: int) -> tuple[SeedReport, float]:
    """Fill the catalog with the demo products through a started platform.

    The platform is built like ``create-admin`` builds it, so the seed writes to the
    databases and storage the settings name (SQLite files embedded, PostgreSQL and
    S3 distributed) and its events go out through the configured transport.
    Returns the report and the wall time including start-up and draining the outboxes.
    """
    import time

    from panthera.catalog import demo
    from panthera.runtime.platform import Platform
    from panthera.runtime.registry import SERVICE_NAMES

    started = time.perf_counter()
    platform = Platform(settings, SERVICE_NAMES)
    await platform.start(one_shot=True)
    try:
        deps = platform.apps["catalog"].state.catalog_deps
        report = await demo.seed(deps, products=products)
        await platform.drain_outboxes(rounds=1000)
    finally:
        await platform.stop()
    return report, time.perf_counter() - started


@app.command()
def seed(
    data_dir: DataDirOption = None,
    products: Annotated[
        int, typer.Option(min=0, max=100_000, help="How many demo products to have.")
    ] = 1000,
) -> None:
    """Fill the shop with a demo catalog: categories, products, variants, stock and images.

    Running it again adds only what is missing (products are matched by slug).
    """
    settings = _settings(data_dir)
    report, seconds = asyncio.run(seed_demo(settings, products))
    typer.echo(
        f"categories: {report.categories_created} created; "
        f"products: {report.products_created} created, {report.products_skipped} already there; "
        f"images: {report.images_created} created"
    )
    typer.echo(f"seeded in {seconds:.1f} s (catalog work {report.seconds:.1f} s)")


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Directory to write into.")] = Path("docs/openapi"),
    events_output: Annotated[
        Path, typer.Option(help="Directory for the published events' schemas.")
    ] = Path("docs/events"),
    check: Annotated[
        bool, typer.Option(help="Only compare with the files there; exit 1 on any difference.")
    ] = False,
) -> None:
    """Write every service's OpenAPI document and event schemas (or check the committed ones)."""
    from panthera.runtime.contracts import event_schemas, render
    from panthera.runtime.documents import openapi_documents

    files = {output / f"{name}.json": doc for name, doc in openapi_documents().items()}
    files |= {events_output / f"{key}.json": doc for key, doc in event_schemas().items()}
    stale = []
    for target, document in files.items():
        text = render(document)
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(str(target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        typer.echo(f"wrote {target}")
    if stale:
        typer.echo("out of date (run `panthera openapi`): " + ", ".join(stale), err=True)
        raise typer.Exit(1)


@app.command()
def architecture(
    out: Annotated[Path, typer.Option(help="Directory to write into.")] = Path("docs/architecture"),
    check: Annotated[
        bool,
        typer.Option(help="Only compare with the files there; exit 1 on any difference."),
    ] = False,
) -> None:
    """Write the architecture document, diagrams included (or check the committed one).

    Run from the repository's root: it reads deploy/, docs/ and README.md there.
    """
    from panthera.runtime.architecture import ArchitectureError, differences, generate, write
    from panthera.runtime.registry import all_definitions

    root = Path.cwd()
    # Links inside the document are relative to where it is written.
    relative = Path(os.path.relpath(out.resolve(), root))
    try:
        files = generate(all_definitions(), root=root, out=relative)
    except ArchitectureError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if check:
        stale = differences(files, out)
        if stale:
            typer.echo(
                f"out of date (run `panthera architecture`): {len(stale)} files in {out}",
                err=True,
            )
            for path in stale:
                typer.echo(f"  {out / path}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out} is up to date ({len(files)} files)")
        return
    write(files, out)
    typer.echo(f"wrote {len(files)} files to {out}")


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
