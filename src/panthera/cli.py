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

    from panthera.runtime.apps import heap_frozen_after_startup
    from panthera.runtime.serving import http_protocol

    uvicorn.run(
        heap_frozen_after_startup(asgi_app),
        host=host,
        port=port,
        http=http_protocol(),
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
    from panthera.kernel.tracing import configure_tracing
    from panthera.runtime.apps import embedded_app

    settings = _settings(data_dir)
    configure_logging(settings.log_level, json=settings.log_json)
    configure_tracing(
        "platform", endpoint=settings.otlp_endpoint, sample_ratio=settings.otlp_sample_ratio
    )
    _serve(embedded_app(settings), host, port, settings.log_level)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="gateway, or one service: auth, users, ...")],
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
) -> None:
    """Run one service (or the gateway) as its own process."""
    from panthera.kernel.observability import configure_logging
    from panthera.kernel.tracing import configure_tracing
    from panthera.runtime.apps import service_app

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    configure_tracing(
        service, endpoint=settings.otlp_endpoint, sample_ratio=settings.otlp_sample_ratio
    )
    try:
        asgi_app = service_app(settings, service)
    except (KeyError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _serve(asgi_app, host, port, settings.log_level)


@app.command()
def up(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the gateway.")] = 8000,
    first_service_port: Annotated[
        int, typer.Option(help="Services listen on ports counting up from here; 0 picks free ones.")
    ] = 8101,
    replicas: Annotated[int, typer.Option(min=1, help="Processes per service.")] = 2,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Logs and topology.json (what runs where); default <data dir>/run."),
    ] = None,
    grace_seconds: Annotated[
        float, typer.Option(help="How long a stopping process may finish its work before SIGKILL.")
    ] = 25.0,
    ready_timeout: Annotated[
        float, typer.Option(help="How long the processes may take to become ready.")
    ] = 120.0,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Migrate every database first.")
    ] = True,
) -> None:
    """Run the distributed shape on this machine: every service in its own processes.

    Each service runs REPLICAS times and the gateway once, against the PostgreSQL,
    Redis and RabbitMQ the settings name. A process that dies is restarted (after
    a delay that doubles while it keeps dying); SIGINT or SIGTERM stops them all,
    the gateway first, each given the grace period before it is killed.
    """
    from panthera.kernel.observability import configure_logging
    from panthera.runtime import up as local
    from panthera.runtime.supervisor import Supervisor
    from panthera.runtime.topology import missing_servers, plan

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    missing = missing_servers(settings)
    if missing:
        typer.echo("error: `panthera up` needs " + "; ".join(missing), err=True)
        raise typer.Exit(2)
    topology = plan(
        host=host, gateway_port=port, first_service_port=first_service_port, replicas=replicas
    )

    def announce(supervisor: Supervisor) -> None:
        for child in supervisor.children.values():
            typer.echo(f"{child.spec.name:<24} {child.spec.url}")
        typer.echo(f"ready: the gateway answers on {topology.gateway.url}")

    status = asyncio.run(
        local.run(
            settings,
            topology,
            run_dir=run_dir or settings.data_dir / "run",
            grace_seconds=grace_seconds,
            ready_timeout_seconds=ready_timeout,
            migrate=migrate_first,
            on_ready=announce,
        )
    )
    raise typer.Exit(status)


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


@app.command()
def backup(
    output: Annotated[Path, typer.Argument(help="A new directory to write the backup into.")],
    data_dir: DataDirOption = None,
) -> None:
    """Take a logical backup of every service's database (pg_dump, or SQLite's backup API)."""
    from panthera.runtime import backup as backups

    settings = _settings(data_dir)
    try:
        taken = backups.backup(settings, output)
    except backups.BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for entry in taken:
        typer.echo(f"{entry.service:<16} {entry.file} ({entry.bytes} bytes)")
    typer.echo(f"backup written to {output}")


@app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="A directory `panthera backup` wrote.")],
    service: Annotated[
        list[str] | None, typer.Option(help="Only this service (repeatable); all when omitted.")
    ] = None,
    data_dir: DataDirOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Replace the services' databases with a backup's (stop the services first)."""
    from panthera.runtime import backup as backups

    settings = _settings(data_dir)
    if not yes:
        typer.confirm("This replaces the data in the databases. Go on?", abort=True)
    try:
        restored = backups.restore(settings, source, service or None)
    except backups.BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"restored: {', '.join(restored)}")


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
        if report.products_created:
            database = platform.runtimes["catalog"].database
            await database.refresh_statistics()
            await deps.search.compact(database)
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
def k8s(
    output: Annotated[Path, typer.Option(help="Directory to write into.")] = Path(
        "deploy/k8s/base/services"
    ),
    check: Annotated[
        bool, typer.Option(help="Only compare with the files there; exit 1 on any difference.")
    ] = False,
) -> None:
    """Write each service's Kubernetes objects from the registry (or check the committed ones)."""
    from panthera.runtime.kubernetes import write

    changed = write(output, check=check)
    if check and changed:
        typer.echo("out of date (run `panthera k8s`): " + ", ".join(map(str, changed)), err=True)
        raise typer.Exit(1)
    for path in [] if check else changed:
        typer.echo(f"wrote {path}")


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
