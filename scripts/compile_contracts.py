"""Compile contracts/ into contracts/build/<Name>.json (commit the result)."""

from __future__ import annotations

import argparse
import sys

from granular.adapters.chain.compiler import (
    DEFAULT_EVM_VERSION,
    compile_contracts,
    resolve_compiler,
    write_artifacts,
)
from granular.errors import GranularError
from granular.paths import artifacts_dir, project_root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evm-version", default=DEFAULT_EVM_VERSION)
    args = parser.parse_args()
    root = project_root()
    try:
        compiler = resolve_compiler(root)
        print(f"compiling with solc {compiler.version} ({compiler.source}: {compiler.path})")
        artifacts = compile_contracts(root, evm_version=args.evm_version)
    except GranularError as error:
        print(f"compile failed: {error}", file=sys.stderr)
        return 1
    for path in write_artifacts(artifacts, artifacts_dir(root)):
        print(f"wrote {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
