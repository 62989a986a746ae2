"""Benchmark on a device over SSH: `lenet-edge bench --on ssh://[user@]host[:port]`.

One SSH session per target, all targets at once (a thread each), through the
system OpenSSH client, so the user's ssh config, keys, agent, ProxyJump and
known_hosts apply as they do for `ssh` (`-F FILE` names another config).
`BatchMode` keeps it from ever waiting on a prompt, and host keys are checked
as the user's configuration says: an unknown key fails, saying how to add it.

A session runs `REMOTE_SCRIPT` in `sh` on the target:

1. `mktemp -d` makes a private directory, removed by a shell trap when the
   shell exits, also on a signal;
2. the target's Python (`--remote-python`, else `python3`) runs `BOOTSTRAP`,
   which reads one tar archive from standard input into that directory: the
   measuring modules (`SHIPPED`: the very files the host runs, see `device`),
   `job.json` (models, reference, config), the .tflite files and the images
   as one uint8 .npy; then it runs `device.main`;
3. the result comes back as one JSON line on stdout.

Standard input carries the archive and then stays open until the session
ends: the runner quits when it closes, so Ctrl-C, a timeout or a dropped link
end the remote run and its directory goes with it. A session that did not end
by itself is also followed by a best-effort `rm -rf` over a fresh connection.

Every failure becomes the target's one-line `error` (see `classify`). Every
value that reaches a remote shell goes through `shlex.quote`.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import numpy as np

from .config import BenchConfig, RemoteConfig
from .device import PROGRESS_MARK, RESULT_MARK
from .fileio import sha256_file
from .harness import METHOD, SCHEMA_VERSION, check_data, data_sha256

# The package modules the device runs, unchanged: numpy and the standard library only (see `device`).
SHIPPED = ("errors.py", "config.py", "machine.py", "harness.py", "device.py", "runtimes/base.py", "runtimes/litert.py")
PACKAGE_INITS = {  # written in place of the host's __init__ files, which import the whole toolkit
    "lenet_edge/__init__.py": '"""lenet-edge\'s measuring modules, as `bench --on` runs them on a device."""\n',
    "lenet_edge/runtimes/__init__.py": '"""The model handle, and the TFLite interpreter\'s on a device."""\n',
}
DIR_MARK = "lenet-edge-dir "
TOO_OLD_MARK = "lenet-edge-error python "
EXIT_NO_TMPDIR = 90

# Run by `sh -c` on the target with $1 = Python, $2 = the bootstrap, $3 = the runner's own deadline (seconds).
# One line, so that any login shell passes it on intact. `exit 129` on a signal makes the EXIT trap run.
REMOTE_SCRIPT = (
    "umask 077; "
    f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/lenet-edge.XXXXXX") || exit {EXIT_NO_TMPDIR}; '
    "trap 'rm -rf \"$d\"' EXIT; trap 'exit 129' HUP INT TERM PIPE; "
    f'echo "{DIR_MARK}$d" >&2; '
    '"$1" -c "import base64,sys;exec(base64.b64decode(sys.argv[1]))" "$2" "$d" "$3"'
)

# Python 2 must still parse this, so that an old interpreter fails with a clear message rather than a SyntaxError.
BOOTSTRAP = f"""
import sys
if sys.version_info < (3, 8):
    sys.stderr.write("{TOO_OLD_MARK}%s\\n" % sys.version.split()[0])
    sys.exit(4)
import io, struct, tarfile
directory, deadline, stdin = sys.argv[2], float(sys.argv[3]), sys.stdin.buffer
def read(n):
    data = stdin.read(n)
    if len(data) < n:
        sys.exit(75)  # the host went away before the archive arrived
    return data
size = struct.unpack(">Q", read(8))[0]
archive = tarfile.open(fileobj=io.BytesIO(read(size)))
archive.extractall(directory, **({{"filter": "data"}} if hasattr(tarfile, "data_filter") else {{}}))
sys.path.insert(0, directory)
from lenet_edge.device import main
sys.exit(main(directory, stdin, deadline))
"""


@dataclass(frozen=True)
class SshTarget:
    """A device to benchmark on: `ssh://[user@]host[:port]` (host may be an alias from the ssh config)."""

    url: str
    host: str
    user: str | None = None
    port: int | None = None
    kind: ClassVar[str] = "ssh"  # see `targets`
    local: ClassVar[bool] = False  # another machine: it measures while the host does

    @property
    def where(self) -> str:
        return self.host + (f" port {self.port}" if self.port else "")


_SAFE = re.compile(r"[A-Za-z0-9_.%:][A-Za-z0-9_.%:@+-]*")  # no leading '-': never read as an ssh option


def parse_target(url: str) -> SshTarget:
    """`ssh://[user@]host[:port]` -> SshTarget.

    Raises:
        ValueError: another scheme, a path, a password, a bad port, or a host or user name ssh would misread.
    """
    form = "expected ssh://[USER@]HOST[:PORT]"
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.netloc:
        raise ValueError(f"{url!r}: {form}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: {form}, without a path")
    if parts.password is not None:
        raise ValueError(f"{url!r}: no password in the URL; ssh runs in batch mode: use a key or an agent")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number from 1 to 65535") from None
    host = parts.hostname or ""
    user = unquote(parts.username) if parts.username else None
    for what, value in (("host", host), ("user", user)):
        if value is not None and not _SAFE.fullmatch(value):
            raise ValueError(f"{url!r}: {what} {value!r} is not a plain name or address")
    if port == 0:
        raise ValueError(f"{url!r}: the port must be a number from 1 to 65535")
    shown = f"[{host}]" if ":" in host else host
    return SshTarget(f"ssh://{user + '@' if user else ''}{shown}{f':{port}' if port else ''}", host, user, port)


def ssh_command(target: SshTarget, config: RemoteConfig, remote_command: str) -> list[str]:
    """The ssh argv running `remote_command` (already quoted for the remote shell) on the target."""
    argv = ["ssh"]
    if config.ssh_config:
        argv += ["-F", config.ssh_config]
    argv += ["-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={config.connect_timeout}"]
    argv += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "Compression=yes"]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    return [*argv, "--", target.host, remote_command]


def remote_command(python: str, deadline_s: float) -> str:
    bootstrap = base64.b64encode(BOOTSTRAP.encode()).decode()
    return shlex.join(["sh", "-c", REMOTE_SCRIPT, "lenet-edge", python, bootstrap, f"{deadline_s:.0f}"])


def sample_indices(n: int, sample: int | None, seed: int) -> np.ndarray:
    """Which of `n` images to send: all of them, or `sample` of them drawn with `seed`, in their original order."""
    if sample is None or sample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))


def archive(job: dict, models: dict[str, Path], images: np.ndarray, labels: np.ndarray) -> bytes:
    """The tar archive a session sends: the runner package, job.json, the models and the data."""
    buffer = io.BytesIO()
    package = Path(__file__).parent
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))

        for name, text in PACKAGE_INITS.items():
            add(name, text.encode())
        for module in SHIPPED:
            add(f"lenet_edge/{module}", (package / module).read_bytes())
        add("job.json", json.dumps(job).encode())
        for name, entry in job["models"].items():
            if models[name].is_file():  # a missing file stays missing there: the same error entry as here
                add(entry["file"], models[name].read_bytes())
        for name, array in (("images", images), ("labels", labels.astype(np.uint8))):
            npy = io.BytesIO()
            np.save(npy, np.ascontiguousarray(array), allow_pickle=False)
            add(f"data/{name}.npy", npy.getvalue())
    return buffer.getvalue()


class Sessions:
    """Every target's session, run in threads while the host measures; `results()` waits for them all.

    Leaving the `with` block on an exception (Ctrl-C included) stops the
    sessions still running, and waits for their clean-up.
    """

    def __init__(
        self,
        targets: list[SshTarget],
        models: dict[str, Path],
        images: np.ndarray,
        labels: np.ndarray,
        bench: BenchConfig,
        config: RemoteConfig,
        *,
        reference: str,
        data_info: dict,
        progress: Callable[[str], None] | None = None,
    ):
        self.targets, self.config, self.say = targets, config, progress or (lambda message: None)
        self.models = models
        check_data(images, np.asarray(labels))  # before labels travel as uint8
        keep = sample_indices(len(images), config.sample, config.sample_seed)
        self.images, self.labels = images[keep], np.asarray(labels)[keep]
        self.data_info = {
            **data_info,
            "sample_of": len(images) if len(keep) < len(images) else None,
            "sample_seed": config.sample_seed if len(keep) < len(images) else None,
        }
        self.job = {
            "models": {
                name: {"path": str(p), "file": f"models/{i}.tflite"} for i, (name, p) in enumerate(models.items())
            },
            "reference": reference,
            "config": {**asdict(bench), "batch_sizes": list(bench.batch_sizes)},
            "data_info": {"source": data_info.get("source"), "split": data_info.get("split")},
        }
        self.skeleton = {  # what a target that gave no result still records
            "schema_version": SCHEMA_VERSION,
            "ok": False,
            "reference": reference,
            "data": {**self.data_info, "n": len(keep)},
            "machine": None,
            "config": self.job["config"],
            "method": METHOD,
            "models": {},
        }
        self.cancel = threading.Event()

    def __enter__(self) -> Sessions:
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.targets)), thread_name_prefix="ssh")
        payload = archive(self.job, self.models, self.images, self.labels) if self.targets else b""
        if self.targets:
            self.say(
                f"sending {len(self.images)} images and {len(self.models)} model(s) to {len(self.targets)} target(s)"
            )
        self.futures = [self.pool.submit(self._run, target, payload) for target in self.targets]
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.cancel.set()
        self.pool.shutdown(wait=True)

    def results(self) -> list[dict]:
        """One entry per target, in the order given: its results dict, or the skeleton with an `error`."""
        return [future.result() for future in self.futures]

    def _run(self, target: SshTarget, payload: bytes) -> dict:
        result = run_session(target, payload, self.config, self.cancel, self.say)
        if "error" in result:
            self.say(f"{target.url}: {result['error']}")
            return {"target": target.url, "kind": target.kind, **self.skeleton, "error": result["error"]}
        self.say(f"{target.url}: done")
        return {"target": target.url, "kind": target.kind, **self.checked(result)}

    def checked(self, result: dict) -> dict:
        """The device's results with the sample recorded, after checking it ran the files and data sent."""
        result["data"].update(sample_of=self.data_info["sample_of"], sample_seed=self.data_info["sample_seed"])
        if result["data"]["sha256"] != data_sha256(self.images, self.labels.astype(np.int64)):
            return {**self.skeleton, "error": "the images the target evaluated differ from those sent"}
        for name, entry in result["models"].items():
            path, sent = self.models[name], self.job["models"][name]["file"]
            if "error" in entry:  # name this machine's file, not the target's temporary copy
                entry["error"] = re.sub(rf"\S*/{re.escape(sent)}\b", lambda _, p=str(path): p, entry["error"])
            elif entry["sha256"] != sha256_file(path):
                result["models"][name] = {"error": f"{path}: the target's copy differs from this file"}
                result["ok"] = False
        return result


def run_session(
    target: SshTarget, payload: bytes, config: RemoteConfig, cancel: threading.Event, say: Callable[[str], None]
) -> dict:
    """One session on `target`: the device's results dict, or `{"error": one line}`."""
    argv = ssh_command(target, config, remote_command(config.python, config.timeout + 60))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # A session of its own: Ctrl-C reaches this process only, which stops ssh itself (`Sessions.__exit__`).
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, bufsize=0, start_new_session=True)
        threading.Thread(
            target=_send, args=(proc.stdin, len(payload).to_bytes(8, "big") + payload), daemon=True
        ).start()
        ended = "cancelled"
        try:
            ended = _wait(proc, err, config.timeout, cancel, lambda m: say(f"{target.url}: {m}"))
        finally:
            if proc.poll() is None:
                _stop(proc)
            try:
                proc.stdin.close()
            except OSError:
                pass
            log = _read(err)
            if ended != "exit":
                _remove_remote_dir(target, config, log)
        output = _read(out)
    if ended == "timeout":
        return {"error": f"timed out: no result within {config.timeout:g} s (--remote-timeout)"}
    if ended == "cancelled":
        return {"error": "interrupted"}
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
            return {"error": result["error"]} if "error" in result and "models" not in result else result
    return {"error": classify(target, config, proc.returncode, log)}


def _send(stdin, data: bytes) -> None:
    """Write the archive and leave stdin open (its end tells the runner the host is gone)."""
    view = memoryview(data)
    try:
        while view:
            view = view[stdin.write(view) :]
    except (OSError, ValueError):  # ssh ended early (it says why on stderr), or the session closed stdin
        pass


def _wait(proc, err, timeout: float, cancel: threading.Event, say: Callable[[str], None]) -> str:
    """Wait for ssh to exit, relaying the runner's progress lines: "exit", "timeout" or "cancelled"."""
    end, seen = time.monotonic() + timeout, 0
    while True:
        try:
            proc.wait(0.2)
            return "exit"
        except subprocess.TimeoutExpired:
            pass
        text = _read(err)
        for line in text[seen:].splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            seen += len(line)
            if line.startswith(PROGRESS_MARK):
                say(line[len(PROGRESS_MARK) :].strip())
        if cancel.is_set():
            return "cancelled"
        if time.monotonic() > end:
            return "timeout"


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _read(file) -> str:
    file.seek(0)
    return file.read().decode("utf-8", errors="replace")


def _remove_remote_dir(target: SshTarget, config: RemoteConfig, log: str) -> None:
    """Best effort, after a session cut short: remove its directory over a new connection (the trap should have)."""
    found = re.search(rf"^{DIR_MARK}(/\S*/lenet-edge\.[A-Za-z0-9]+)\r?$", log, re.MULTILINE)
    if not found:
        return
    command = shlex.join(["rm", "-rf", "--", found.group(1)])
    try:
        subprocess.run(ssh_command(target, config, command), stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        pass


def classify(target: SshTarget, config: RemoteConfig, returncode: int, log: str) -> str:
    """One line saying why a session gave no result, from ssh's exit status and its stderr."""
    lines = [line.strip() for line in log.replace("\r", "").splitlines() if line.strip()]
    text = " ".join(lines)
    port = f" -p {target.port}" if target.port else ""
    login = f"{target.user}@{target.host}" if target.user else target.host
    if returncode == 255:  # ssh's own failure: it never ran our command
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            known = f"[{target.host}]:{target.port}" if target.port else target.host
            return (
                f"the host key of {target.where} has changed (a reinstalled device, or someone in between): "
                f"if the change is expected, `ssh-keygen -R {shlex.quote(known)}` and connect once with "
                f"`ssh{port} {login}` to check and accept the new key"
            )
        if "Host key verification failed" in text or "host key is known" in text:
            return (
                f"unknown host key for {target.where}: check its fingerprint, then add it with "
                f"`ssh-keyscan{port} {target.host} >> ~/.ssh/known_hosts` or connect once with `ssh{port} {login}`"
            )
        if "Permission denied" in text:
            methods = re.search(r"Permission denied \(([^)]*)\)", text)
            return (
                f"authentication refused by {target.where}"
                + (f" ({methods.group(1)})" if methods else "")
                + f": batch mode uses keys and agents only, no password prompt; `ssh-copy-id{port} {login}` "
                "installs your key, or name one (IdentityFile) in your ssh config"
            )
        if "Connection refused" in text:
            return f"connection refused by {target.where}: no SSH server listening there (wrong port?)"
        if "Could not resolve hostname" in text:
            return f"unknown host {target.host}: not in DNS, /etc/hosts or your ssh config"
        for reason in ("No route to host", "Network is unreachable", "Host is down"):
            if reason in text:
                return f"{target.where} is unreachable: {reason.lower()}"
        if "timed out" in text:
            return f"{target.where} is unreachable: no answer within {config.connect_timeout} s (ConnectTimeout)"
    if TOO_OLD_MARK in text:
        version = text.split(TOO_OLD_MARK, 1)[1].split()[0]
        return f"{config.python} on the target is Python {version}; the runner needs 3.8 or newer (--remote-python)"
    if returncode == 127:
        return (
            f"no Python on the target: `{config.python}` not found; install Python 3.8+ with numpy there, "
            "or name one with --remote-python"
        )
    if returncode == 126:
        return f"`{config.python}` on the target is not executable (--remote-python)"
    if returncode == EXIT_NO_TMPDIR:
        return "the target could not make a temporary directory (mktemp -d in $TMPDIR or /tmp)"
    last = next((line for line in reversed(lines) if not line.startswith(DIR_MARK)), "no message")
    return f"the session ended with status {returncode} and no result: {last}"
