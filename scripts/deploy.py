"""Deploy the forwarder and the certificate registry; write deployments/<network>.json.

A thin wrapper over `granular deploy` (see `granular deploy --help`). The key comes from
GRANULAR_DEPLOYER_KEYSTORE and GRANULAR_DEPLOYER_PASSWORD_FILE. Only on anvil (chain id
31337) does it fall back to anvil's first development account.
"""

from __future__ import annotations

import sys

from granular.cli import main as granular


def main(argv: list[str] | None = None) -> int:
    return granular(["deploy", *(sys.argv[1:] if argv is None else argv)], prog="deploy")


if __name__ == "__main__":
    sys.exit(main())
