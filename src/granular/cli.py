"""The `granular` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from granular.adapters.chain.anvil import Anvil
from granular.config import Settings
from granular.errors import GranularError
from granular.paths import deployments_dir
from granular.services.deployment import deploy, read_record

log = logging.getLogger("granular")


def run(settings: Settings) -> int:
    """The main job on the embedded default stack: an anvil of its own, the registry on it.

    With GRANULAR_RPC_URL set, it uses that chain and the deployment recorded for
    GRANULAR_NETWORK instead.
    """
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="granular", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the main job (embedded anvil unless GRANULAR_RPC_URL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    try:
        if args.command == "run":
            return run(settings)
    except GranularError as error:
        print(f"granular: {error}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
