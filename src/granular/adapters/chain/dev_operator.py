"""The example buyer's operator approval on the embedded anvil (`make run` only).

Guarantee: it signs only on chain id 31337 and only for a wallet that is one of anvil's
development accounts (whose keys the public test mnemonic gives); anywhere else it does
nothing and says why. Never a key from configuration, never another chain.
"""

from __future__ import annotations

from eth_utils.address import to_checksum_address

from granular.adapters.chain.client import connect
from granular.adapters.chain.forwarder import registry_calldata
from granular.adapters.chain.keys import ANVIL_CHAIN_ID, anvil_account

DEV_ACCOUNTS = 10


def approve_operator_on_anvil(*, rpc_url: str, registry: str, wallet: str, operator: str) -> str:
    """setOperator(operator, true) signed by `wallet`'s development key. Returns what
    happened: "approved", "already" or the reason it did nothing."""
    w3, chain_id = connect(rpc_url)
    if chain_id != ANVIL_CHAIN_ID:
        return f"chain id {chain_id} is not anvil's {ANVIL_CHAIN_ID}"
    wallet = to_checksum_address(wallet)
    accounts = {anvil_account(i).address: i for i in range(DEV_ACCOUNTS)}
    if wallet not in accounts:
        return "the wallet is not an anvil development account"
    contract = w3.eth.contract(
        address=to_checksum_address(registry),
        abi=[
            {
                "name": "isOperator",
                "type": "function",
                "stateMutability": "view",
                "inputs": [{"name": "w", "type": "address"}, {"name": "o", "type": "address"}],
                "outputs": [{"name": "", "type": "bool"}],
            }
        ],
    )
    if contract.functions.isOperator(wallet, to_checksum_address(operator)).call():
        return "already"
    account = anvil_account(accounts[wallet])
    tx = {
        "to": to_checksum_address(registry),
        "data": registry_calldata("setOperator", to_checksum_address(operator), True),
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": chain_id,
        "gas": 100_000,
        "maxFeePerGas": w3.eth.gas_price * 2 + 1,
        "maxPriorityFeePerGas": 1,
    }
    signed = account.sign_transaction(tx)  # type: ignore[arg-type]
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    return "approved" if receipt["status"] == 1 else "reverted"
