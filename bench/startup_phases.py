"""Where ``panthera run``'s start-up goes, step by step, in a fresh interpreter.

``python bench/startup_phases.py --data-dir DIR`` does what ``panthera run`` does
before it answers (import, build the embedded app, run its lifespan start-up:
migrations, transport, relays) and prints one JSON line with the wall and CPU
seconds of each step. ``bench/startup.py`` runs it; it is also useful alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

_WALL0 = time.perf_counter()
_CPU0 = time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    steps: dict[str, dict[str, float]] = {}
    mark = [time.perf_counter(), time.process_time()]

    def step(name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        steps[name] = {"wall_s": wall - mark[0], "cpu_s": cpu - mark[1]}
        mark[0], mark[1] = wall, cpu

    os.environ["PANTHERA_DATA_DIR"] = str(args.data_dir)
    os.environ.setdefault("PANTHERA_LOG_LEVEL", "WARNING")
    import uvicorn  # noqa: F401  (what the CLI imports to serve)

    from panthera.kernel.settings import get_settings
    from panthera.runtime.apps import embedded_app

    step("import")
    settings = get_settings()
    app = embedded_app(settings)
    step("build app (services, routers, password hasher)")

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            step("lifespan start (migrations, transport, relays)")
        step("lifespan stop")

    asyncio.run(lifespan())
    result: dict[str, Any] = {
        "steps": steps,
        "total_wall_s": time.perf_counter() - _WALL0,
        "total_cpu_s": time.process_time() - _CPU0,
    }
    print("PHASES_JSON " + json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
