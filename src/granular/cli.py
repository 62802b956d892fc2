"""The `granular` command: the daemon, one-off passes, deployment, verification, the API,
API keys, migrations. Every command reads its settings from GRANULAR_* variables (its
--help names them); every failure is one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError as SettingsInvalid

from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.config import Settings
from granular.errors import GranularError
from granular.paths import deployments_dir
from granular.services.accounts import Role, create_api_key, key_prefix, revoke
from granular.services.deployment import deploy

log = logging.getLogger("granular")

_DATABASE = "GRANULAR_DATABASE_URL (default sqlite:///var/granular.db)"
_CHAIN = (
    "GRANULAR_RPC_URL (unset: the embedded anvil under GRANULAR_VAR_DIR, default var/), "
    "GRANULAR_NETWORK (default local: deployments/local.json), GRANULAR_DEPLOYMENTS_DIR"
)
_KEY = "GRANULAR_KEYSTORE and GRANULAR_PASSWORD_FILE (the issuer key; anvil's only on 31337)"
_OUTBOX = (
    "GRANULAR_CONFIRMATIONS[_BY_CHAIN] (1), GRANULAR_FEE_CAP_WEI[_BY_CHAIN], "
    "GRANULAR_TIER_DEADLINES_S, GRANULAR_PRIORITY_FEE_FLOOR_WEI, "
    "GRANULAR_OUTBOX_POLL_INTERVAL_S (1), GRANULAR_OUTBOX_LEASE_TTL_S (60)"
)
_ISSUANCE = (
    "GRANULAR_GRACE_S (300: a window is due at its end + grace), "
    "GRANULAR_ISSUANCE_BATCH_SIZE (100 items per transaction), GRANULAR_MAX_ENERGY_RULE (drec)"
)
EPILOGS = {
    "run": (
        f"Settings: {_DATABASE}; {_CHAIN}; {_KEY}; {_ISSUANCE}; {_OUTBOX}; "
        "GRANULAR_API_HOST (127.0.0.1), GRANULAR_API_PORT (8000; 0: any free port), "
        "GRANULAR_ANVIL_PORT (0: any free port), GRANULAR_CATCH_UP_INTERVAL_S (60), "
        "GRANULAR_SETTLE_INTERVAL_S (2), GRANULAR_LIFECYCLE_INTERVAL_S (60), "
        "GRANULAR_EXAMPLES (true: the embedded run loads examples/ once). "
        "Ctrl-C or SIGTERM: the job in hand finishes, leases are released, exit 0; "
        "a second Ctrl-C stops at once."
    ),
    "issue-once": (
        f"One plan + send + settle pass for an external cron. Settings: {_DATABASE}; "
        f"{_CHAIN}; {_KEY}; {_ISSUANCE}; {_OUTBOX}. Attaches to a running embedded anvil."
    ),
    "deploy": (
        "Deploys the forwarder and the registry, grants ISSUER_ROLE and writes "
        "deployments/<network>.json. Settings: GRANULAR_DEPLOYER_KEYSTORE and "
        "GRANULAR_DEPLOYER_PASSWORD_FILE (the deployer key; anvil's first account only on "
        "chain id 31337), GRANULAR_RPC_URL and GRANULAR_NETWORK as defaults of the options, "
        "GRANULAR_DEPLOYMENTS_DIR."
    ),
    "verify": (
        f"Recomputes the header's keccak256 and compares it with the stored hash and the "
        f"chain's event; exit 1 on a mismatch. Settings: {_DATABASE}; {_CHAIN}. Without "
        "GRANULAR_RPC_URL it uses the running embedded anvil, or loads its saved state."
    ),
    "show": (
        f"Prints the header, provenance and transaction of a certificate as JSON. Settings: "
        f"{_DATABASE}; GRANULAR_NETWORK, GRANULAR_DEPLOYMENTS_DIR (the record's chain id)."
    ),
    "serve": (
        f"Settings: {_DATABASE}; GRANULAR_MAX_ENERGY_RULE and its parameters; {_CHAIN} "
        "(the signed registry commands, relayed by the record's issuer; off when no chain "
        "answers)."
    ),
    "index": (
        f"One pass of the registry mirror up to head - confirmations. Settings: {_DATABASE}; "
        f"{_CHAIN}; GRANULAR_CONFIRMATIONS[_BY_CHAIN] (1). No key needed."
    ),
    "reindex": (
        f"Empties the registry mirror (wallet names kept) and indexes it again from the "
        f"deployment block. Settings: {_DATABASE}; {_CHAIN}; GRANULAR_CONFIRMATIONS (1)."
    ),
    "migrate": f"Settings: {_DATABASE}.",
    "api-key": f"Settings: {_DATABASE}.",
}


def serve(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from granular.api.app import create_app

    engine = make_engine(settings.database_url)
    upgrade(engine)
    from granular.scheduler.stack import serve_commands

    app = create_app(
        sessions=session_factory(engine), max_energy_policy=settings.max_energy_policy()
    )
    app.state.registry_commands = serve_commands(settings)
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
    print(f"revoked {revoked} key(s) with prefix {key_prefix(args.prefix)}")
    return 0 if revoked else 1


def deploy_command(settings: Settings, args: argparse.Namespace) -> int:
    rpc_url = args.rpc_url or settings.rpc_url
    if not rpc_url:
        raise GranularError("--rpc-url (or GRANULAR_RPC_URL) is required")
    record = deploy(
        rpc_url=rpc_url,
        network=args.network or settings.network,
        directory=args.deployments_dir or settings.deployments_dir or deployments_dir(),
        issuer=args.issuer,
        force=args.force,
        keystore=settings.deployer_keystore,
        password_file=settings.deployer_password_file,
    )
    print(json.dumps(record, indent=2))
    return 0


def progress_bar(stream: TextIO) -> Callable[[int, int], None] | None:
    """A one-line bar on a terminal; nothing when the output is a file or a pipe."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, unless it has none (None, a flag off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="granular", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOGS[name],
            formatter_class=_Defaults,
        )

    command("run", "the daemon and the API (embedded anvil unless GRANULAR_RPC_URL)")
    once = command("issue-once", "one issuance pass: plan, send, settle, then exit")
    once.add_argument(
        "--wait-s", type=float, default=600.0, help="longest wait for confirmations, seconds"
    )
    dep = command("deploy", "deploy the registry and record it")
    dep.add_argument("--rpc-url", help="default: GRANULAR_RPC_URL")
    dep.add_argument("--network", help="names deployments/<network>.json (GRANULAR_NETWORK)")
    dep.add_argument("--issuer", help="address granted ISSUER_ROLE (default: the deployer)")
    dep.add_argument("--force", action="store_true", help="replace a deployment still on chain")
    dep.add_argument(
        "--deployments-dir",
        type=Path,
        default=None,
        help="where records go (GRANULAR_DEPLOYMENTS_DIR, else deployments/)",
    )
    ver = command("verify", "check a certificate's header hash against the chain")
    ver.add_argument("certificate_id", type=int, metavar="CERTIFICATE_ID")
    sho = command("show", "a certificate's header, provenance and transaction")
    sho.add_argument("certificate_id", type=int, metavar="CERTIFICATE_ID")
    command("index", "one pass of the registry mirror (indexer), then exit")
    command("reindex", "rebuild the registry mirror from the deployment block")
    command("migrate", "bring the database schema up to date")
    serve_parser = command("serve", "serve the REST API only (no daemon)")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve_parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    keys = command("api-key", "create or revoke API keys")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser(
        "create", help="create a key; it is printed once", epilog=EPILOGS["api-key"]
    )
    create.add_argument("--organization", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--label")
    revoke_parser = key_actions.add_parser(
        "revoke", help="revoke keys by their prefix", epilog=EPILOGS["api-key"]
    )
    revoke_parser.add_argument(
        "prefix", help="the key's printed prefix: gk_de65fe95 or de65fe95 (or the whole key)"
    )
    return root


def dispatch(settings: Settings, args: argparse.Namespace) -> int:
    from granular.scheduler import stack

    if args.command == "run":
        return stack.run(settings)
    if args.command == "issue-once":
        summary = stack.issue_once(settings, progress=progress_bar(sys.stderr), wait_s=args.wait_s)
        print(json.dumps(summary))
        return 0
    if args.command == "deploy":
        return deploy_command(settings, args)
    if args.command == "verify":
        verification = _jsonable(stack.verify(settings, args.certificate_id))
        print(json.dumps(verification, indent=2, default=str))
        return 0 if verification.get("ok") else 1
    if args.command == "show":
        print(json.dumps(stack.show(settings, args.certificate_id), indent=2, default=str))
        return 0
    if args.command in ("index", "reindex"):
        print(json.dumps(stack.index(settings, from_scratch=args.command == "reindex")))
        return 0
    if args.command == "migrate":
        upgrade(make_engine(settings.database_url))
        return 0
    if args.command == "serve":
        return serve(settings, args.host, args.port)
    return api_key(settings, args)


def main(argv: list[str] | None = None, *, prog: str = "granular") -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = Settings()
    except SettingsInvalid as error:
        problems = "; ".join(
            f"GRANULAR_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in error.errors()
        )
        print(f"{prog}: {problems}", file=sys.stderr)
        return 1
    try:
        return dispatch(settings, args)
    except GranularError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
