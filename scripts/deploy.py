"""Deploy the forwarder and the certificate registry; write deployments/<network>.json.

The key comes from GRANULAR_DEPLOYER_KEYSTORE and GRANULAR_DEPLOYER_PASSWORD_FILE. Only on
anvil (chain id 31337) does it fall back to anvil's first development account.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from granular.errors import GranularError
from granular.paths import deployments_dir
from granular.services.deployment import deploy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--network", required=True, help="names deployments/<network>.json")
    parser.add_argument("--issuer", help="address granted ISSUER_ROLE (default: the deployer)")
    parser.add_argument("--force", action="store_true", help="replace a deployment still on chain")
    parser.add_argument("--deployments-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    keystore = os.environ.get("GRANULAR_DEPLOYER_KEYSTORE")
    password_file = os.environ.get("GRANULAR_DEPLOYER_PASSWORD_FILE")
    try:
        record = deploy(
            rpc_url=args.rpc_url,
            network=args.network,
            directory=args.deployments_dir or deployments_dir(),
            issuer=args.issuer,
            force=args.force,
            keystore=Path(keystore) if keystore else None,
            password_file=Path(password_file) if password_file else None,
        )
    except GranularError as error:
        print(f"deploy: {error}", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
