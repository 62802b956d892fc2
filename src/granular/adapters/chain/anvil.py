"""Start and stop a local anvil from the npm package `@foundry-rs/anvil` (no foundryup).

`persistent_anvil` keeps the chain in a state file (anvil's `--state`: loaded on start,
dumped on a clean exit and every `dump_interval_s`), so a second start sees the same chain,
and mines like a real chain as well as on demand (`embedded_mining`);
`read_only_anvil` loads that file without ever writing it (for `granular verify` while no
daemon runs). `EmbeddedChain` is the small file under var/ that tells other commands where
the running embedded anvil answers.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from granular.errors import ConfigurationError, GranularError
from granular.paths import project_root

ANVIL_CHAIN_ID = 31337
_PLATFORMS = {
    ("Linux", "x86_64"): "linux-amd64",
    ("Linux", "aarch64"): "linux-arm64",
    ("Darwin", "x86_64"): "darwin-amd64",
    ("Darwin", "arm64"): "darwin-arm64",
}


class AnvilFailed(GranularError):
    code = "anvil_failed"


def anvil_binary(root: Path | None = None) -> Path:
    """The platform binary the npm package ships (its node wrapper would outlive a kill)."""
    suffix = _PLATFORMS.get((platform.system(), platform.machine()))
    if suffix is None:
        raise ConfigurationError(f"no anvil package for {platform.system()} {platform.machine()}")
    path = (
        (root or project_root())
        / "node_modules"
        / "@foundry-rs"
        / f"anvil-{suffix}"
        / "bin"
        / "anvil"
    )
    if not path.is_file():
        raise ConfigurationError(f"anvil not found at {path}; run `npm ci`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Anvil:
    """An anvil process on 127.0.0.1; a context manager that always stops it."""

    def __init__(
        self,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        log: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.args = args
        self.log = log
        # Linux: anvil gets SIGTERM (and dumps its state) when the thread that started it
        # dies, a kill -9 of granular included; elsewhere EmbeddedChain finds the orphan.
        self.die_with_parent = die_with_parent and platform.system() == "Linux"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> Anvil:
        command = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self._process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_terminate_with_parent if self.die_with_parent else None,
            # Its own session: a Ctrl-C at the terminal reaches granular, which finishes the
            # job in hand (sending to this node) and then stops it, not both at once.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AnvilFailed(
                    f"anvil exited with {self._process.returncode} on port {self.port}"
                )
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise AnvilFailed(f"anvil did not answer on {self.url} within {timeout_s} s")

    def head_block(self) -> int:
        """The latest block number (raises AnvilFailed when anvil does not answer)."""
        body = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(json.loads(response.read())["result"], 16)
        except (OSError, ValueError, KeyError) as error:
            raise AnvilFailed(f"anvil at {self.url}: {type(error).__name__}") from None

    def send_raw_transaction(self, raw: bytes) -> str:
        """Broadcast signed bytes; the node's error message is raised as AnvilFailed."""
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_sendRawTransaction",
                "params": ["0x" + raw.hex()],
            }
        ).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
        except (OSError, ValueError) as error:
            raise AnvilFailed(f"anvil at {self.url}: {type(error).__name__}") from None
        if "error" in answer:
            raise AnvilFailed(f"anvil refused a transaction: {answer['error'].get('message')}")
        return str(answer["result"])

    def answers(self) -> bool:
        body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


STATE_FILE = "anvil-state.json"
RUNTIME_FILE = "anvil.json"

# The embedded chain's interval block. Automine alone mines one block when transactions
# arrive and leaves what does not fit its gas limit pending until the next transaction
# comes, which for a batch may be the fast tier's replacement 30 s later. An interval block
# mines the leftovers within this many seconds. It is mined when the chain is idle too, and
# the state file keeps every block (about 1.7 kB each, measured on anvil 1.7.1): 10 s grows
# an idle chain by about 0.6 MB an hour, where 1 s would grow it by 6.3 MB.
EMBEDDED_BLOCK_TIME_S = 10


def embedded_mining(block_time_s: int = EMBEDDED_BLOCK_TIME_S) -> tuple[str, ...]:
    """anvil's arguments for automine plus a block every `block_time_s` (mixed mining)."""
    return ("--block-time", str(block_time_s), "--mixed-mining")


def persistent_anvil(
    var_dir: Path,
    *,
    port: int = 0,
    dump_interval_s: int = 2,
    block_time_s: int = EMBEDDED_BLOCK_TIME_S,
) -> Anvil:
    """An anvil whose chain lives in `var_dir/anvil-state.json` across restarts, mining each
    transaction as it arrives and a block every `block_time_s` (`embedded_mining`).

    The periodic dump bounds what a kill -9 loses to `dump_interval_s` of blocks (which the
    next start replays from the outbox's stored attempts); a clean stop (SIGTERM) dumps
    everything.
    """
    state = var_dir / STATE_FILE
    return Anvil(
        port=port or None,
        args=(
            "--state",
            str(state),
            "--state-interval",
            str(dump_interval_s),
            *embedded_mining(block_time_s),
        ),
        log=var_dir / "anvil.log",
        die_with_parent=True,
    )


def read_only_anvil(var_dir: Path) -> Anvil | None:
    """An anvil loaded from the saved state that never writes it back; None without one."""
    state = var_dir / STATE_FILE
    if not state.is_file():
        return None
    return Anvil(args=("--load-state", str(state)), log=var_dir / "anvil-readonly.log")


@dataclass(frozen=True, slots=True)
class EmbeddedChain:
    """Where the embedded anvil of a running `granular run` answers (var/anvil.json)."""

    url: str
    pid: int  # the granular process that started it
    anvil_pid: int | None = None
    chain_id: int = ANVIL_CHAIN_ID

    def write(self, var_dir: Path) -> None:
        var_dir.mkdir(parents=True, exist_ok=True)
        path = var_dir / RUNTIME_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self)) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    @staticmethod
    def remove(var_dir: Path) -> None:
        (var_dir / RUNTIME_FILE).unlink(missing_ok=True)

    @staticmethod
    def running(var_dir: Path) -> EmbeddedChain | None:
        """The recorded embedded anvil if it still answers, else None."""
        path = var_dir / RUNTIME_FILE
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            found = EmbeddedChain(
                url=str(fields["url"]),
                pid=int(fields["pid"]),
                anvil_pid=None if fields.get("anvil_pid") is None else int(fields["anvil_pid"]),
                chain_id=int(fields["chain_id"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        port = int(found.url.rsplit(":", 1)[1])
        return found if Anvil(port=port).answers() else None

    def orphaned(self) -> bool:
        """The granular process that started this anvil is gone (a kill -9 where anvil
        could not be told)."""
        return not _alive(self.pid)

    def stop_orphan(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the orphaned anvil (it dumps its state) and wait until it is gone."""
        if self.anvil_pid is None or not _alive(self.anvil_pid):
            return
        os.kill(self.anvil_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(self.anvil_pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; it is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True
