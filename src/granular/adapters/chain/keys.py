"""Signing keys: an eth-account keystore and its password file, never a key in the clear.

Only on anvil (chain id 31337) may granular fall back to anvil's first development account,
derived from the public test mnemonic every anvil uses.
"""

from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from granular.errors import ConfigurationError, GranularError

ANVIL_CHAIN_ID = 31337
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


# A local signing account, as services pass it around without calling into it.
Signer = LocalAccount


class KeystoreError(GranularError):
    code = "keystore_error"


class DevelopmentKeyRefused(ConfigurationError):
    code = "development_key_refused"

    def __init__(self, chain_id: int, keystore: Path | None = None) -> None:
        if keystore is None:  # nothing given: say what to give
            message = (
                f"chain id {chain_id}: no keystore given, and the anvil development key is "
                f"accepted only on chain id {ANVIL_CHAIN_ID}; set the keystore and its "
                "password file (GRANULAR_KEYSTORE / GRANULAR_PASSWORD_FILE, or "
                "GRANULAR_DEPLOYER_KEYSTORE / GRANULAR_DEPLOYER_PASSWORD_FILE for deploy)"
            )
        else:
            message = (
                f"chain id {chain_id}: keystore {keystore} holds an anvil development "
                f"account, accepted only on chain id {ANVIL_CHAIN_ID}; use a key of your own"
            )
        super().__init__(message, {"chainId": chain_id})


def anvil_account(index: int = 0) -> LocalAccount:
    """Anvil's development account `index` (funded on every fresh anvil)."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(
        ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


def _development_addresses(count: int = 10) -> set[str]:
    return {anvil_account(i).address for i in range(count)}


def load_keystore(keystore: Path, password_file: Path) -> LocalAccount:
    """Decrypt `keystore` with the first line of `password_file`. Errors never show either."""
    try:
        encrypted = json.loads(keystore.read_text(encoding="utf-8"))
    except OSError as error:
        raise KeystoreError(f"keystore {keystore}: cannot read ({error.strerror})") from None
    except ValueError:
        raise KeystoreError(f"keystore {keystore}: not a JSON keystore") from None
    try:
        password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as error:
        raise KeystoreError(
            f"password file {password_file}: cannot read ({error.strerror})"
        ) from None
    try:
        key = Account.decrypt(encrypted, password)
    except ValueError:
        raise KeystoreError(
            f"keystore {keystore}: the password in {password_file} does not decrypt it"
        ) from None
    except (KeyError, TypeError):
        raise KeystoreError(f"keystore {keystore}: not an eth-account keystore") from None
    account: LocalAccount = Account.from_key(key)
    return account


def signing_account(
    *, chain_id: int, keystore: Path | None, password_file: Path | None
) -> LocalAccount:
    """The keystore's account; anvil's first account only on chain 31337 without a keystore."""
    if keystore is not None:
        if password_file is None:
            raise ConfigurationError("a keystore needs its password file")
        account = load_keystore(keystore, password_file)
        if chain_id != ANVIL_CHAIN_ID and account.address in _development_addresses():
            raise DevelopmentKeyRefused(chain_id, keystore)
        return account
    if chain_id != ANVIL_CHAIN_ID:
        raise DevelopmentKeyRefused(chain_id)
    return anvil_account(0)
