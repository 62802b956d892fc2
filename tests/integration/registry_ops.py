"""Random valid registry commands on anvil, for the mirror tests: issue, split, transfer,
claim, withdraw, set operator and close, each picked among what the chain state allows."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime

from eth_utils.crypto import keccak
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.headers import put_headers
from granular.domain.headers import canonical_json, data_hash
from tests.integration.chain import Chain

PRODUCTION, CONSUMPTION = 0, 1
ACTIVE = 1
FUELS = ("ES100", "ES200", "ES300")
COUNTRIES = ("KE", "NG", "DE")
_batches = itertools.count(1)
_headers = itertools.count(1)


def header_for(kind: int, quantity_wh: int, rng: random.Random) -> dict[str, object]:
    serial = next(_headers)
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp() + 3600 * (serial % 5000)
    return {
        "assetID": f"device-{rng.randrange(4)}",
        "fuelCode": rng.choice(FUELS),
        "techCode": "TC110",
        "countryCode": rng.choice(COUNTRIES),
        "periodStart": datetime.fromtimestamp(start, UTC).isoformat(),
        "periodEnd": datetime.fromtimestamp(start + 3600, UTC).isoformat(),
        "buyerReservationId": str(rng.randrange(1, 4)),
        "kind": "production" if kind == PRODUCTION else "consumption",
        "quantity": quantity_wh,
        "serial": serial,
    }


class RegistryOps:
    """Drives the registry with random valid commands; remembers every slice id it saw."""

    def __init__(
        self,
        chain: Chain,
        issuer: str,
        wallets: Sequence[str],
        sessions: sessionmaker[Session] | None,
        seed: int,
    ) -> None:
        self.chain = chain
        self.issuer = issuer
        self.wallets = list(wallets)
        self.sessions = sessions
        self.rng = random.Random(seed)
        self.slice_ids: set[int] = set()
        self.closed: set[str] = set()

    # --- views ---
    def slice(self, slice_id: int) -> tuple[str, int, int, int, int]:
        owner, kind, state, quantity_wh, certificate_id = self.chain.registry.functions.sliceOf(
            slice_id
        ).call()
        return owner, kind, state, quantity_wh, certificate_id

    def active(self) -> list[tuple[int, str, int, int]]:
        found = []
        for slice_id in sorted(self.slice_ids):
            owner, kind, state, quantity_wh, _ = self.slice(slice_id)
            if state == ACTIVE:
                found.append((slice_id, owner, kind, quantity_wh))
        return found

    def open_wallets(self) -> list[str]:
        return [w for w in self.wallets if w not in self.closed]

    def _send(self, call: object, sender: str) -> object:
        receipt = self.chain.send(call, sender)
        for name in ("CertificateIssued", "SliceSplit"):
            for event in self.chain.events(receipt, name):
                if name == "CertificateIssued":
                    self.slice_ids.add(event.args.certificateId)
                else:
                    self.slice_ids.update(event.args.childSliceIds)
        return receipt

    # --- commands ---
    def issue(self, count: int | None = None) -> None:
        items = []
        headers = []
        for _ in range(count or self.rng.randint(1, 3)):
            kind = self.rng.choice((PRODUCTION, CONSUMPTION))
            quantity_wh = self.rng.randint(1, 2_000)
            owner = self.rng.choice(self.open_wallets())
            if self.rng.random() < 0.8:
                canonical = canonical_json(header_for(kind, quantity_wh, self.rng))
                digest = data_hash(canonical)
                headers.append(("0x" + digest.hex(), canonical))
            else:  # a certificate of another issuer: no header here
                digest = keccak(text=f"foreign-{self.rng.random()}")
            items.append((owner, kind, quantity_wh, digest))
        if headers and self.sessions is not None:
            with self.sessions.begin() as session:
                put_headers(session=session, headers=headers, now=datetime.now(UTC))
        batch_id = keccak(text=f"mirror-batch-{next(_batches)}-{self.rng.random()}")
        self._send(self.chain.registry.functions.issueBatch(batch_id, items), self.issuer)

    def split(self) -> bool:
        candidates = [a for a in self.active() if a[3] >= 2]
        if not candidates:
            return False
        slice_id, owner, _, quantity_wh = self.rng.choice(candidates)
        parts = []
        left = quantity_wh
        for _ in range(self.rng.randint(1, 3)):
            if left < 2:
                break
            part = self.rng.randint(1, left - 1)
            to = self.rng.choice([*self.open_wallets(), "0x" + "00" * 20])
            parts.append((part, to))
            left -= part
        self._send(self.chain.registry.functions.split(slice_id, parts), owner)
        return True

    def transfer(self) -> bool:
        candidates = self.active()
        if not candidates:
            return False
        slice_id, owner, _, quantity_wh = self.rng.choice(candidates)
        to = self.rng.choice(self.open_wallets())
        if quantity_wh > 1 and self.rng.random() < 0.5:
            call = self.chain.registry.functions.transferPart(
                slice_id, self.rng.randint(1, quantity_wh), to
            )
        else:
            call = self.chain.registry.functions.transfer(slice_id, to)
        self._send(call, owner)
        return True

    def claim(self) -> bool:
        active = self.active()
        pairs = [
            (p, c)
            for p in active
            if p[2] == PRODUCTION
            for c in active
            if c[2] == CONSUMPTION and c[1] == p[1]
        ]
        if not pairs:
            return False
        production, consumption = self.rng.choice(pairs)
        quantity_wh = min(production[3], consumption[3])
        if self.rng.random() < 0.5 and quantity_wh > 1:
            quantity_wh = self.rng.randint(1, quantity_wh)
        call = self.chain.registry.functions.claimPart(production[0], consumption[0], quantity_wh)
        self._send(call, production[1])
        return True

    def withdraw(self) -> bool:
        candidates = self.active()
        if not candidates:
            return False
        slice_id = self.rng.choice(candidates)[0]
        self._send(self.chain.registry.functions.withdraw(slice_id), self.issuer)
        return True

    def set_operator(self) -> bool:
        wallet, operator = self.rng.sample(self.wallets, 2)
        self._send(
            self.chain.registry.functions.setOperator(operator, self.rng.random() < 0.7), wallet
        )
        return True

    def close(self, wallet: str) -> None:
        """Empty `wallet` (its Active slices sent to another open wallet), then close it."""
        others = [w for w in self.open_wallets() if w != wallet]
        for slice_id, owner, _, _ in self.active():
            if owner == wallet:
                self._send(self.chain.registry.functions.transfer(slice_id, others[0]), wallet)
        self._send(self.chain.registry.functions.closeWallet(), wallet)
        self.closed.add(wallet)

    def random(self, steps: int) -> None:
        actions = (
            self.issue,
            self.split,
            self.transfer,
            self.claim,
            self.claim,
            self.withdraw,
            self.set_operator,
        )
        for _ in range(steps):
            action = self.rng.choice(actions)
            if action() is False:
                self.issue()
