"""`bench --on ssh://...` against a real OpenSSH server on a loopback port.

The `sshd` fixture starts the system's sshd for the session with a throwaway
host key and one authorized client key; the client side is the system `ssh`
with a config file passed by `--ssh-config`. The "device" is this machine:
the runner is sent, unpacked in the server's TMPDIR and run with this test's
Python (`--remote-python`), so its results must equal the host's. Without
sshd these tests skip, saying how to get it; on CI (CI=true) they fail
instead, since .ci/run installs it.
"""

import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import default_sigint

from lenet_edge.benchmark import bench_run
from lenet_edge.cli import main
from lenet_edge.config import BenchConfig, RemoteConfig
from lenet_edge.remote import parse_target, remote_command, ssh_command

SSHD = shutil.which("sshd", path=os.pathsep.join(["/usr/sbin", "/usr/local/sbin", os.environ.get("PATH", "")]))
FAST = BenchConfig(
    runs=20, warmup=2, batch_sizes=(1,), accuracy_batch=64, throughput_seconds=0.05, throughput_chunks=1, load_repeats=1
)


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    root: Path
    config: Path  # ssh -F: our key and known_hosts
    remote_tmp: Path  # the sessions' TMPDIR: where the runner's directories appear

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def client_config(self, name: str, key: str, known_hosts: str) -> Path:
        """Another ssh config: the given key and known_hosts file."""
        path = self.root / name
        path.write_text(
            f"Host *\n  IdentityFile {self.root / key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.root / known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        )
        return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd on a free 127.0.0.1 port for the session: throwaway host key, one authorized key, stopped at the end."""
    if not SSHD:
        if os.environ.get("CI") == "true":
            pytest.fail("CI: no sshd; .ci/run installs openssh-server when /usr/sbin/sshd is absent")
        pytest.skip("no OpenSSH server: `apt-get install openssh-server` (Debian/Ubuntu) runs these tests")
    root = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key", "other_key"):
        keygen(root / key)
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    remote_tmp = root / "remote-tmp"
    remote_tmp.mkdir()
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin prohibit-password\nSetEnv TMPDIR={remote_tmp}\n"
    )
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {(root / 'host_key.pub').read_text()}")
    (root / "empty_known_hosts").write_text("")
    keygen(root / "impostor_key")  # a known_hosts naming another key for this address: a "changed" host key
    (root / "changed_known_hosts").write_text(f"[127.0.0.1]:{port} {(root / 'impostor_key.pub').read_text()}")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # its privilege-separation directory (systemd makes it otherwise)
    log = root / "sshd.log"
    server = subprocess.Popen([SSHD, "-D", "-f", str(root / "sshd_config"), "-E", str(log)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        server.kill()
        message = f"sshd did not start: {log.read_text().strip() if log.exists() else 'no log'}"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    daemon = Sshd(port, getpass.getuser(), root, root / "ssh_config", remote_tmp)
    daemon.client_config("ssh_config", "client_key", "known_hosts")
    yield daemon
    server.terminate()
    server.wait(10)


def leftovers(sshd: Sshd, wait: float = 5.0) -> list[str]:
    """The runner directories still in the server's TMPDIR, after giving a finished session `wait` s to clean up."""
    deadline = time.monotonic() + wait
    while (found := sorted(p.name for p in sshd.remote_tmp.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def bench_on(sshd: Sshd, tmp_path: Path, models: dict, tiny_npz: Path, host=True, **remote):
    remote = {"ssh_config": str(sshd.config), "python": sys.executable, **remote}
    results, _ = bench_run(
        tmp_path, FAST, models=models, source=str(tiny_npz), write=False, on=[sshd.url], host=host,
        remote=RemoteConfig(**remote),
    )  # fmt: skip
    return results


def run_models(run: Path) -> dict:
    return {name: run / f"lenet5_{name}.tflite" for name in ("float32", "int8")}


# --- without a server ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, host, user, port",
    [
        ("ssh://pi", "pi", None, None),
        ("ssh://pi@raspberrypi.local:2222", "raspberrypi.local", "pi", 2222),
        ("ssh://root@[::1]:22/", "::1", "root", 22),
    ],
)
def test_target_urls(url, host, user, port):
    target = parse_target(url)
    assert (target.host, target.user, target.port) == (host, user, port)
    assert parse_target(target.url) == target  # the shown form reads back the same


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("pi", "expected ssh://"),
        ("http://pi", "expected ssh://"),
        ("ssh://pi/home", "without a path"),
        ("ssh://pi:secret@pi", "no password"),
        ("ssh://pi:99999", "port must be"),
        ("ssh://-oProxyCommand=touch%20x", "not a plain name"),
        ("ssh://-l@pi", "not a plain name"),
        ("ssh://pi;reboot", "not a plain name"),
    ],
)
def test_bad_target_urls_are_refused(url, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_target(url)


def test_every_remote_argument_is_quoted():
    python = "/opt/my env/bin/python3; touch pwned"
    argv = ssh_command(parse_target("ssh://pi:2222"), RemoteConfig(python=python), remote_command(python, 60))
    assert argv[:2] == ["ssh", "-T"] and "BatchMode=yes" in argv and argv[-3:-1] == ["--", "pi"]
    words = shlex.split(argv[-1])  # what the remote shell will see: sh -c SCRIPT NAME PYTHON BOOTSTRAP DEADLINE
    assert words[:2] == ["sh", "-c"] and words[4] == python and words[6] == "60"


def test_no_host_needs_a_target(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--dir", str(tmp_path), "--no-host"])
    assert result.exit_code == 2 and "--no-host leaves nothing to measure" in result.output


def verdict_entry(arch: str, isa: list[str], ratio: float, int8_delegated: bool = True) -> dict:
    """A target's results cut down to what `verdict` reads: float32 and int8, one machine."""

    def model(size, accuracy, p50, delegated):
        ops = 8 if delegated else 0
        return {
            "size_bytes": size,
            "accuracy": accuracy,
            "n": 1000,
            "latency_us": {"p50": p50},
            "xnnpack": {"delegated": delegated, "partitions": int(delegated), "ops_delegated": ops, "ops_total": 8},
        }

    int8 = model(66_000, 0.995, 10.0 * ratio, int8_delegated)
    int8["ratios_to_reference"] = {"p50_latency": ratio, "size": 0.27, "accuracy_delta_pp": 0.1}
    checked = {"x86_64": ["avx2", "avx512_vnni", "avx_vnni", "amx_int8"], "aarch64": ["asimd", "asimddp", "i8mm"]}
    return {
        "target": "ssh://device",
        "reference": "float32",
        "config": {"xnnpack": True},
        "machine": {"cpu_arch": arch, "cpu_isa": isa, "cpu_isa_checked": checked[arch], "versions": {}},
        "models": {"float32": model(244_000, 0.994, 10.0, True), "int8": int8},
    }


@pytest.mark.parametrize(
    "arch, isa, ratio, delegated, expected",
    [
        ("x86_64", ["avx2"], 1.65, True, ["float32 is the faster here", "AVX2 without VNNI", "no AVX-512 VNNI"]),
        ("x86_64", ["avx2", "avx512_vnni"], 1.01, True, ["neither is clearly faster", "first convolution"]),
        ("x86_64", ["avx2", "avx512_vnni"], 0.8, True, ["int8 is the faster here", "AVX-512 VNNI: int8 dot"]),
        ("aarch64", ["asimd", "asimddp"], 0.6, True, ["int8 is the faster here", "dot product (asimddp)"]),
        ("aarch64", ["asimd"], 1.2, True, ["NEON without the dot-product extension"]),
        ("aarch64", ["asimd", "asimddp"], 2.2, False, ["XNNPACK did not take int8's graph"]),
    ],
)
def test_verdicts(arch, isa, ratio, delegated, expected):
    from lenet_edge.verdict import verdict

    text = verdict(verdict_entry(arch, isa, ratio, delegated))
    assert text.startswith("int8 is 0.27x the size of float32") and "99.50% vs 99.40% (+0.10 pp)" in text
    assert f"p50 latency {ratio:.2f}x" in text
    for fragment in expected:
        assert fragment in text, text


# --- against the server ----------------------------------------------------------------------


def test_device_results_equal_the_hosts(sshd, exported_run, tiny_npz, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"TFL3" + bytes(200))  # a model neither runtime can load
    models = {**run_models(exported_run), "broken": broken}
    results = bench_on(sshd, tmp_path, models, tiny_npz)

    host, device = results["targets"]
    assert [host["target"], device["target"]] == ["host", sshd.url]
    assert results["models"] == host["models"] and results["machine"] == host["machine"]  # the top level: the host
    assert device["machine"]["cpu"] == host["machine"]["cpu"] and device["machine"]["os"]
    assert device["data"]["sha256"] == host["data"]["sha256"] and device["data"]["sample_of"] is None
    for name in ("float32", "int8"):
        here, there = host["models"][name], device["models"][name]
        assert there["accuracy"] == here["accuracy"] and there["confusion"] == here["confusion"]
        assert there["sha256"] == here["sha256"] and there["path"] == here["path"] == str(models[name])
        assert len(there["latency_samples_ns"]) == FAST.runs and there["latency_us"]["p50"] > 0
    assert "not a loadable TFLite model" in device["models"]["broken"]["error"]
    assert str(broken) in device["models"]["broken"]["error"]  # names this machine's file, not the copy
    assert results["ok"] is False and device["ok"] is False  # the broken model
    assert "int8 is 0." in device["verdict"] and "top-1" in device["verdict"] and "CPU: " in device["verdict"]
    assert leftovers(sshd) == []


def test_sample_and_report(sshd, exported_run, tiny_npz, tmp_path):
    from lenet_edge.report import format_markdown, format_table

    results = bench_on(sshd, tmp_path, run_models(exported_run), tiny_npz, sample=30)
    device = results["targets"][1]
    assert results["ok"] and device["data"]["n"] == 30 and device["data"]["sample_of"] == 100
    markdown = format_markdown(results)
    assert f"## {sshd.url}" in markdown and "across targets" in markdown and "## Verdict" in markdown
    assert "a sample (seed 0) of 100" in markdown
    table = format_table(results)
    assert table.splitlines()[-1].startswith(f"  {sshd.url}: int8 is ")
    assert leftovers(sshd) == []


def bare_python(tmp_path: Path) -> Path:
    """A Python on the 'device' with numpy and nothing else: no site-packages, a path holding numpy alone."""
    site = tmp_path / "only-numpy"
    site.mkdir()
    package = Path(np.__file__).parent
    for sibling in (package, package.parent / "numpy.libs"):  # numpy.libs: the wheel's bundled BLAS
        if sibling.exists():
            (site / sibling.name).symlink_to(sibling)
    wrapper = tmp_path / "python-without-tflite"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(site))} exec {shlex.quote(sys.executable)} -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_failures_are_one_line_entries(sshd, exported_run, tiny_npz, tmp_path):
    models = run_models(exported_run)
    other_key = sshd.client_config("refused", "other_key", "known_hosts")
    unknown = sshd.client_config("unknown", "client_key", "empty_known_hosts")
    changed = sshd.client_config("changed", "client_key", "changed_known_hosts")
    marker = tmp_path / "pwned"
    cases = {
        "no runtime": ({"python": str(bare_python(tmp_path))}, "no TFLite runtime for "),
        "no python": ({"python": f"/nonexistent/python3; touch {marker}"}, "no Python on the target"),
        "refused key": ({"ssh_config": str(other_key)}, "authentication refused by 127.0.0.1"),
        "unknown host key": ({"ssh_config": str(unknown)}, f"ssh-keyscan -p {sshd.port} 127.0.0.1 >>"),
        "changed host key": ({"ssh_config": str(changed)}, "has changed"),
    }
    for case, (remote, fragment) in cases.items():
        results = bench_on(sshd, tmp_path, models, tiny_npz, host=False, **remote)
        (device,) = results["targets"]
        assert results["ok"] is False and device["ok"] is False and device["models"] == {}, case
        assert fragment in device["error"] and "\n" not in device["error"], (case, device["error"])
        assert device["verdict"].startswith("no result"), case
        if case == "no runtime":
            assert "`pip install ai-edge-litert` there" in device["error"]
    assert not marker.exists()  # the Python path reached the remote shell quoted
    assert leftovers(sshd) == []


def test_command_line_failures_exit_1_with_every_target_reported(sshd, exported_run, tmp_path):
    wrong_port = f"ssh://{sshd.user}@127.0.0.1:{free_port()}"
    nobody = f"ssh://lenet-edge-no-such-user@127.0.0.1:{sshd.port}"
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    result = CliRunner().invoke(
        main,
        ["bench", "--dir", str(run), "--no-host", "--on", wrong_port, "--on", nobody]
        + ["--ssh-config", str(sshd.config), "--remote-timeout", "30"],
    )
    assert result.exit_code == 1, result.output
    assert f"== {wrong_port}: no result" in result.output and "connection refused by 127.0.0.1" in result.output
    assert "authentication refused" in result.output
    assert f"error: no result from {wrong_port}, {nobody}; see" in result.output and "Traceback" not in result.output
    import json

    saved = json.loads((run / "bench.json").read_text())
    assert [t["target"] for t in saved["targets"]] == [wrong_port, nobody] and saved["ok"] is False
    assert "across targets" in (run / "bench.md").read_text()


def test_a_timeout_is_an_entry_and_cleans_up(sshd, exported_run, tiny_npz, tmp_path):
    slow = BenchConfig(runs=10_000_000, warmup=0, batch_sizes=(1,))
    remote = RemoteConfig(ssh_config=str(sshd.config), python=sys.executable, timeout=3)
    results, _ = bench_run(
        tmp_path, slow, models=run_models(exported_run), source=str(tiny_npz), write=False, on=[sshd.url],
        host=False, remote=remote,
    )  # fmt: skip
    assert results["targets"][0]["error"] == "timed out: no result within 3 s (--remote-timeout)"
    assert leftovers(sshd) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_remote_run_leaves_nothing_behind(sshd, exported_run, tmp_path, sig):
    """Ctrl-C stops the sessions and exits 130; even a host killed outright ends the remote run (its stdin closes)."""
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    argv = [sys.executable, "-m", "lenet_edge", "bench", "--dir", str(run), "--runs", "100000000", "--warmup", "0"]
    argv += ["--on", sshd.url, "--ssh-config", str(sshd.config), "--remote-python", sys.executable]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(sshd.remote_tmp.glob("lenet-edge.*/job.json")):  # unpacked: the runner is starting
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        time.sleep(1.0)  # into the remote timing loop
        process.send_signal(sig)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"bench did not end within 60 s of the signal; its stderr: {process.communicate()[1]}")
    finally:
        if process.poll() is None:
            process.kill()
    if sig == signal.SIGINT:
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
    assert leftovers(sshd, wait=10) == []
