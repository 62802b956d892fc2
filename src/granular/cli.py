"""The `granular` command: run the main job, serve the API, manage API keys, migrate."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.config import Settings
from granular.errors import GranularError
from granular.paths import deployments_dir
from granular.services.accounts import Role, create_api_key, revoke
from granular.services.deployment import deploy, read_record

log = logging.getLogger("granular")


def run(settings: Settings) -> int:
    """The main job on the embedded default stack: an anvil of its own, the registry on it.

    With GRANULAR_RPC_URL set, it uses that chain and the deployment recorded for
    GRANULAR_NETWORK instead.
    """
    engine = make_engine(settings.database_url)
    upgrade(engine)
    if settings.rpc_url:
        record = read_record(deployments_dir() / f"{settings.network}.json")
        if record is None:
            raise GranularError(
                f"no deployments/{settings.network}.json; run scripts/deploy.py first"
            )
        print(json.dumps(record, indent=2))
        return 0
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    with Anvil(log=settings.var_dir / "anvil.log") as anvil:
        log.info("anvil started at %s", anvil.url)
        record = deploy(
            rpc_url=anvil.url, network="anvil", directory=settings.var_dir / "deployments"
        )
        print(json.dumps(record, indent=2))
    log.info("anvil stopped")
    return 0


def serve(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from granular.api.app import create_app

    engine = make_engine(settings.database_url)
    upgrade(engine)
    app = create_app(
        sessions=session_factory(engine), max_energy_policy=settings.max_energy_policy()
    )
    uvicorn.run(app, host=host, port=port)
    return 0


def api_key(settings: Settings, args: argparse.Namespace) -> int:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    if args.action == "create":
        created = create_api_key(
            sessions=sessions,
            organization=args.organization,
            role=args.role,
            label=args.label,
            now=now,
        )
        print(f"API key for {created.organization} ({created.role.value}); shown only once:")
        print(created.key)
        return 0
    revoked = revoke(sessions=sessions, prefix=args.prefix, now=now)
    print(f"revoked {revoked} key(s) with prefix {args.prefix}")
    return 0 if revoked else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="granular", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the main job (embedded anvil unless GRANULAR_RPC_URL)")
    commands.add_parser("migrate", help="bring the database schema up to date")
    serve_parser = commands.add_parser("serve", help="serve the REST API")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    keys = commands.add_parser("api-key", help="create or revoke API keys")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--organization", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--label")
    revoke_parser = key_actions.add_parser("revoke", help="revoke keys by their prefix")
    revoke_parser.add_argument("prefix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    try:
        if args.command == "run":
            return run(settings)
        if args.command == "migrate":
            upgrade(make_engine(settings.database_url))
            return 0
        if args.command == "serve":
            return serve(settings, args.host, args.port)
        return api_key(settings, args)
    except GranularError as error:
        print(f"granular: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
