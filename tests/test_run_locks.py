"""One writer per run file: a second process is refused, naming the holder; a writer killed
with SIGKILL blocks nobody, and the temporary files it left are removed by the next."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from biotp.errors import BiotpError
from biotp.runs import claim, release, write_run

MLP = Path(__file__).resolve().parents[1] / "circuits" / "mlp.yaml"
HOLD = """
import sys, time
from biotp.runs import claim
claim(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def holder(path):
    """A process that claims `path` and sleeps; returns it once the claim is taken."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_is_refused_naming_the_file_and_the_holder(tmp_path):
    path = tmp_path / "run.h5"
    p = holder(path)
    try:
        with pytest.raises(BiotpError, match=rf"{path}: another process \(pid {p.pid}\) is writing this run file"):
            claim(path)
        with pytest.raises(BiotpError, match=f"pid {p.pid}"):
            write_run(path, {}, {"metrics": {"epoch": [1.0]}})
        assert not path.exists()
    finally:
        p.kill()
        p.wait()


def test_a_killed_writer_blocks_nobody_and_its_temporary_files_go(tmp_path):
    path = tmp_path / "run.h5"
    p = holder(path)
    stray = tmp_path / f"run.h5.tmp-{p.pid}"
    stray.write_bytes(b"half a file")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    live = tmp_path / f"run.h5.tmp-{os.getpid()}"  # a live writer's temporary file stays
    live.write_bytes(b"")
    claim(path)
    try:
        assert not stray.exists() and live.exists()
        live.unlink()
        write_run(path, {}, {"metrics": {"epoch": [1.0]}})
        assert path.exists()
    finally:
        release(path)
    assert not (tmp_path / "run.h5.lock").exists()


def test_claims_by_one_process_nest(tmp_path):
    path = tmp_path / "run.h5"
    claim(path)
    claim(path)
    release(path)
    assert (tmp_path / "run.h5.lock").exists()  # still held once
    release(path)
    assert not (tmp_path / "run.h5.lock").exists()


def test_train_refuses_an_out_another_process_writes(tmp_path, capsys):
    from biotp.cli import main

    path = tmp_path / "run.h5"
    p = holder(path)
    try:
        code = main(["train", str(MLP), "--epochs", "1", "--out", str(path), "--quiet"])
        err = capsys.readouterr().err
        assert code != 0 and f"pid {p.pid}" in err and "Traceback" not in err
    finally:
        p.kill()
        p.wait()
