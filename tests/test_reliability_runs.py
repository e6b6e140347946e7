"""The reliability table, round three (issue 24), part two: a run folder has one owner.

Real processes on one folder: a second ``train`` (or a second ``--resume auto``) while the first
runs is refused with one line naming the first's process id, exit 2, and the first's files stay
intact; a run that fails to write removes only what it created — never a parent folder that
holds another run. Then the edges of choosing and resuming a folder: run names from config file
names (``...yaml``, ``..yaml``, separators, control characters), ``--out ""``, ``--out`` under a
dangling link, a finished run resumed when its last step is not a multiple of
``train.log_every``, a checkpoint whose config lacks ``train.log_every``, a folder where the
digits feature cache goes. ``sample`` reading a run while it is being trained never sees a torn
state.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import time
from pathlib import Path

import pytest
import torch

from scoresde.sample import main as sample_main
from scoresde.train import main as train_main
from scoresde.training.checkpoint import latest_checkpoint, load_run
from scoresde.training.run import run_name
from scoresde.training.runlog import read_metrics

from .train_util import TINY_TOY, fork_main, restore_threads, wait_status, write_config  # noqa: F401


def _checksums(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _wait_for(path: Path, pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        done, _ = os.waitpid(pid, os.WNOHANG)
        assert not done, f"the first process ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


LONG = {"steps": 10**6, "ckpt_every": 5, "log_every": 5}


@pytest.mark.parametrize("second", ["fresh", "resume-auto"])
def test_a_second_train_on_a_running_folder_is_refused_naming_the_holder(tmp_path, second):
    """Two real processes: the first trains; the second (a fresh ``train --out`` or a concurrent
    ``--resume auto``) is refused with the first's PID, exit 2; the first's files are untouched by
    it and whole after the first stops."""
    cfg = write_config(tmp_path / "long.yaml", TINY_TOY, train=LONG)
    run = tmp_path / "run"
    pid = fork_main(["--config", cfg, "--out", run], tmp_path / "first.log")
    try:
        _wait_for(run / "checkpoints" / "latest", pid)
        os.kill(pid, signal.SIGSTOP)  # hold the first still while the second runs: a stable snapshot
        before = _checksums(run)
        argv = ["--config", cfg, "--out", run] if second == "fresh" else ["--out", run, "--resume", "auto"]
        log = tmp_path / "second.log"  # a process of its own: were it accepted, the timeout stops it
        assert wait_status(fork_main(argv, log)) == 2, log.read_text()
        err = log.read_text().strip()
        assert len(err.splitlines()) == 1 and f"run folder {str(run)!r} is in use by process {pid}" in err, err
        assert _checksums(run) == before  # nothing written by the second
        os.kill(pid, signal.SIGCONT)
    finally:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    assert wait_status(pid) == 128 + signal.SIGTERM
    loaded = load_run(run)  # the first's files are whole: the checkpoint loads, the log has each step once
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl")]
    assert loaded.step >= steps[-1] > 0 and steps == sorted(set(steps))
    # the lock died with the first: the folder can be continued now
    assert train_main(["--out", str(run), "--resume", "auto", "--set", f"train.steps={loaded.step}"]) == 0


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_a_failed_run_never_removes_a_shared_parent_holding_another_run(tmp_path):
    """A creates the new parent P and P/a; B trains in P/b meanwhile; A's first checkpoint does not
    fit its file-size limit: A removes P/a (its own) and leaves P, and B's run is whole (exit 0)."""
    parent = tmp_path / "P"
    slow = write_config(tmp_path / "a.yaml", TINY_TOY, train={"steps": 400, "ckpt_every": 400, "log_every": 1})
    b_cfg = write_config(tmp_path / "b.yaml", TINY_TOY, train={"steps": 30, "ckpt_every": 10})
    a = fork_main(["--config", slow, "--out", parent / "a"], tmp_path / "a.log", file_limit=20_000)
    _wait_for(parent / "a" / "metrics.jsonl", a)  # A made P and P/a, and is training
    b = fork_main(["--config", b_cfg, "--out", parent / "b"], tmp_path / "b.log")
    _wait_for(parent / "b" / "config.yaml", b)
    assert wait_status(a) == 74, (tmp_path / "a.log").read_text()
    assert wait_status(b) == 0, (tmp_path / "b.log").read_text()
    assert "the new folder was removed" in (tmp_path / "a.log").read_text()
    assert sorted(p.name for p in parent.iterdir()) == ["b"]
    assert load_run(parent / "b").step == 30 and (parent / "b" / "summary.json").is_file()


def test_a_failed_run_removes_the_parents_it_made_while_empty(tmp_path, monkeypatch, capsys):
    """Alone, the same failure removes every folder it made (nothing else is in them)."""
    import errno

    import scoresde.training.run as run_module

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "x")
    monkeypatch.setattr(run_module, "save_checkpoint", full)
    cfg = write_config(tmp_path / "t.yaml", TINY_TOY)
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "P" / "Q" / "run")]) == 74
    assert "the new folder was removed" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


@pytest.mark.parametrize("file_name, expected", [
    ("toy2d.yaml", "toy2d"), ("my run.yaml", "my_run"), ("a\tb\x07.yaml", "a_b_"), (".hidden.yaml", "hidden"),
    ("x.YML", "x"), ("a.b.yaml", "a.b"), ("ü.yaml", "_"),
])
def test_run_names_keep_safe_characters_and_replace_the_rest(file_name, expected):
    assert run_name(file_name) == expected


@pytest.mark.parametrize("file_name", ["...yaml", "..yaml", ".yaml", "....yml"])
def test_config_names_that_give_no_run_name_are_refused(tmp_path, monkeypatch, capsys, file_name):
    """``...yaml`` (stem ``..``) trained into the current folder, ``..yaml`` into ``runs/``: refused now."""
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / file_name, TINY_TOY)
    before = _checksums(tmp_path)
    assert train_main(["--config", file_name]) == 2
    line = _one_line(capsys)
    assert "gives no run folder name" in line and "expected --out DIR" in line
    assert _checksums(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [file_name]


def test_a_config_name_with_separators_trains_into_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "a b;c.yaml", TINY_TOY, train={"steps": 2})
    assert train_main(["--config", "a b;c.yaml"]) == 0
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["a_b_c"]


@pytest.mark.parametrize("source", [["--config", "t.yaml"], ["--resume", "t.yaml"]])
def test_out_empty_is_refused(tmp_path, monkeypatch, capsys, source):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "t.yaml", TINY_TOY)
    assert train_main([*source, "--out", ""]) == 2
    assert "--out ''" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_out_under_a_dangling_link_names_the_link(tmp_path, capsys):
    (tmp_path / "dl").symlink_to(tmp_path / "missing")
    cfg = write_config(tmp_path / "t.yaml", TINY_TOY)
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "dl" / "run")]) == 2
    err = _one_line(capsys)
    assert "symbolic link to a missing target" in err and "removed" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl", "t.yaml"]


def test_resuming_a_finished_run_between_log_steps_keeps_its_log(tmp_path):
    cfg = write_config(tmp_path / "t.yaml", TINY_TOY, train={"steps": 5, "log_every": 2, "ckpt_every": 2})
    run = tmp_path / "run"
    assert train_main(["--config", str(cfg), "--out", str(run)]) == 0
    log = (run / "metrics.jsonl").read_bytes()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [2, 4, 5]
    assert train_main(["--out", str(run), "--resume", "auto"]) == 0
    assert (run / "metrics.jsonl").read_bytes() == log


def test_a_finished_run_of_one_log_line_is_not_emptied(tmp_path):
    cfg = write_config(tmp_path / "t.yaml", TINY_TOY, train={"steps": 3, "log_every": 50, "ckpt_every": 50})
    run = tmp_path / "run"
    assert train_main(["--config", str(cfg), "--out", str(run)]) == 0
    assert train_main(["--out", str(run), "--resume", "auto"]) == 0
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [3]


def test_a_checkpoint_config_without_log_every_is_one_line_and_nothing_is_created(tmp_path, capsys):
    cfg = write_config(tmp_path / "t.yaml", TINY_TOY, train={"steps": 2})
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    state = torch.load(latest_checkpoint(tmp_path / "run" / "checkpoints"), weights_only=True)
    del state["config"]["train"]["log_every"]
    torch.save(state, tmp_path / "no_log_every.pt")
    capsys.readouterr()
    assert train_main(["--out", str(tmp_path / "new"), "--resume", str(tmp_path / "no_log_every.pt"),
                       "--set", "train.steps=4"]) == 2
    assert "train.log_every" in _one_line(capsys)
    assert not (tmp_path / "new").exists()


def test_a_folder_where_the_digits_feature_cache_goes_is_found_before_training(tmp_path, capsys):
    digits = dict(TINY_TOY, data={"name": "digits", "n": 32}, sample={"sampler": "ddim", "steps": 2, "n": 4},
                  model={"kind": "mlp", "hidden": 16, "depth": 1, "time_dim": 8})
    cfg = write_config(tmp_path / "d.yaml", digits, train={"steps": 2})
    run = tmp_path / "run"
    (run / "digits_features_seed0.safetensors").mkdir(parents=True)
    before = _checksums(tmp_path)
    assert train_main(["--config", str(cfg), "--out", str(run)]) == 2
    assert "digits_features_seed0.safetensors" in _one_line(capsys)
    assert _checksums(tmp_path) == before and sorted(p.name for p in run.iterdir()) == [
        "digits_features_seed0.safetensors"]


def test_sample_reads_a_run_being_trained_without_a_torn_state(tmp_path, capsys):
    """``sample`` takes no lock: while a real second process trains (a checkpoint every step, only
    the newest kept), each load finds a whole checkpoint."""
    cfg = write_config(tmp_path / "long.yaml", TINY_TOY, train={"steps": 10**6, "ckpt_every": 1, "keep_last": 1,
                                                                "log_every": 50})
    run = tmp_path / "run"
    pid = fork_main(["--config", cfg, "--out", run], tmp_path / "train.log")
    try:
        _wait_for(run / "checkpoints" / "latest", pid)
        steps = []
        for _ in range(15):
            loaded = load_run(run)
            steps.append(loaded.step)
        assert steps == sorted(steps) and steps[-1] > steps[0]  # it was training all along
        assert sample_main(["--ckpt", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_status(pid) == 128 + signal.SIGTERM


# --- resources: memory measured, chunks, threads, steps ------------------------------------------

@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ring")
    cfg = write_config(root / "t.yaml", TINY_TOY, train={"steps": 2})
    n = torch.get_num_threads()
    assert train_main(["--config", str(cfg), "--out", str(root / "run")]) == 0
    torch.set_num_threads(n)
    return root / "run"


def test_sample_memory_check_counts_the_activations_of_one_batch(ring_run, tmp_path, monkeypatch, capsys):
    """With 64 MB available: 10⁵ 2-D samples fit (1.6 MB) but not the network's activations on a
    batch of 10⁵ (measured: the tiny MLP keeps > 1 KB per example); in batches of 256 they run."""
    import scoresde.util.host as host

    monkeypatch.setattr(host, "available_memory", lambda: 64 * 2**20)
    out = tmp_path / "s.png"
    args = ["--ckpt", str(ring_run), "--n", "100000", "--steps", "1", "--out", str(out)]
    assert sample_main(args + ["--batch-size", "100000"]) == 2
    err = _one_line(capsys)
    assert "--batch-size=100000" in err and "activations" in err and not out.exists()
    assert sample_main(args + ["--batch-size", "256"]) == 0
    assert np_load(out.with_suffix(".npz")).shape == (100000, 2)


def np_load(path):
    import numpy as np

    with np.load(path) as f:
        return f["samples"]


def test_sample_in_chunks_counts_every_call_and_keeps_small_runs_identical(ring_run, tmp_path, capsys):
    from scoresde.evaluation.report import draw_samples

    model = load_run(ring_run).model
    whole = draw_samples(model, "ddim", 10, steps=3, seed=5, device="cpu")
    same = draw_samples(model, "ddim", 10, steps=3, seed=5, device="cpu", batch_size=10)
    chunked = draw_samples(model, "ddim", 10, steps=3, seed=5, device="cpu", batch_size=4)
    assert torch.equal(whole[0], same[0]) and whole[1] == same[1] == 3
    assert chunked[0].shape == (10, 2) and chunked[1] == 3 * 3  # three chunks of three calls
    from scoresde.samplers import sample

    g = torch.Generator().manual_seed(5)  # the chunks' rule: all of x_T first, then chunk after chunk
    x_T = model.sde.prior_sample((10, 2), generator=g)
    first = sample(model, "ddim", x_T[:4], steps=3, generator=g).x
    assert torch.equal(chunked[0][:4], first.float())
    assert sample_main(["--ckpt", str(ring_run), "--n", "10", "--batch-size", "4", "--steps", "3",
                        "--sampler", "ddim", "--out", str(tmp_path / "c.png")]) == 0
    assert "10 samples, sampler ddim, 9 NFE" in capsys.readouterr().out


def test_class_all_in_chunks_keeps_each_rows_label(tmp_path, capsys):
    """``--class all`` conditions on one label per row: a chunk takes its rows' labels, so the
    chunked deterministic DDIM draw is the whole draw (to float round-off) with 3x the calls."""
    cond = tmp_path / "cond"
    assert train_main(["--config", str(write_config(tmp_path / "c.yaml", TINY_TOY, train={"steps": 1},
                                                    model={**TINY_TOY["model"], "num_classes": 8})),
                       "--out", str(cond)]) == 0
    args = ["--ckpt", str(cond), "--class", "all", "--n", "2", "--sampler", "ddim", "--steps", "3"]
    assert sample_main(args + ["--out", str(tmp_path / "w.png")]) == 0
    assert sample_main(args + ["--batch-size", "6", "--out", str(tmp_path / "c.png")]) == 0
    assert "16 samples, sampler ddim, 9 NFE" in capsys.readouterr().out  # 3 chunks (6 + 6 + 4 rows)
    whole, chunked = np_load(tmp_path / "w.npz"), np_load(tmp_path / "c.npz")
    assert whole.shape == chunked.shape == (16, 2) and abs(whole - chunked).max() < 1e-5


def test_evaluate_memory_check_counts_the_activations_and_their_backward(tmp_path, monkeypatch, capsys):
    """bits/dim keeps the network's activations for the divergence's backward pass: measured on a
    probe batch, a batch that needs more than the memory is refused naming --batch-size."""
    import scoresde.util.host as host
    from scoresde.core.model import activation_bytes
    from scoresde.evaluate import main as evaluate_main

    digits = dict(TINY_TOY, data={"name": "digits", "n": 32}, model={"kind": "mlp", "hidden": 16, "depth": 1,
                                                                     "time_dim": 8})
    run = tmp_path / "d"
    assert train_main(["--config", str(write_config(tmp_path / "d.yaml", digits, train={"steps": 1})),
                       "--out", str(run)]) == 0
    rows = 64
    acts = rows * activation_bytes(load_run(run).model, "cpu", grad=True)
    inputs = rows * 64 * 4.0  # the float32 batch the probes check counts
    assert acts > 4 * inputs  # the activations are what needs the memory here
    monkeypatch.setattr(host, "available_memory", lambda: int(acts / 2))
    args = ["--ckpt", str(run), "--bpd", "--probes", "1"]
    assert evaluate_main(args + ["--limit", str(rows), "--batch-size", str(rows)]) == 2
    err = _one_line(capsys)
    assert f"--batch-size={rows}" in err and "activations" in err
    assert evaluate_main(args + ["--limit", "4", "--batch-size", "4"]) == 0  # a quarter of that memory


def test_thread_counts_are_capped_at_the_cores_with_a_warning(ring_run, tmp_path, capsys):
    from scoresde.util.host import cpu_cores

    out = str(tmp_path / "a.png")
    assert sample_main(["--ckpt", str(ring_run), "--n", "4", "--threads", "1000", "--out", out]) == 0
    err = capsys.readouterr().err
    assert f"--threads=1000 is more than the {cpu_cores()} CPU cores" in err
    assert torch.get_num_threads() == min(1000, cpu_cores())
    cfg = write_config(tmp_path / "t.yaml", TINY_TOY, train={"steps": 1, "threads": 1000})
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert f"train.threads=1000 is more than the {cpu_cores()} CPU cores" in capsys.readouterr().err
    assert torch.get_num_threads() == cpu_cores()


def test_sample_honours_the_runs_train_threads(ring_run, tmp_path):
    torch.set_num_threads(2)
    assert sample_main(["--ckpt", str(ring_run), "--n", "4", "--out", str(tmp_path / "a.png")]) == 0
    assert torch.get_num_threads() == 1  # TINY_TOY's train.threads


@pytest.mark.parametrize("flag", ["--steps 100000000", "--steps 1000000000000"])
def test_sample_steps_beyond_the_bound_are_refused_before_any_grid(ring_run, tmp_path, capsys, flag):
    start = time.process_time()
    assert sample_main(["--ckpt", str(ring_run), *flag.split(), "--out", str(tmp_path / "a.png")]) == 2
    assert flag.replace(" ", "=") in _one_line(capsys) and not (tmp_path / "a.png").exists()
    assert time.process_time() - start < 5  # no grid of 10⁸ times was built (that took a minute)


@pytest.mark.parametrize("sampler", ["ddim", "sde", "dpmpp", "ancestral", "heun", "ode", "pc"])
@pytest.mark.parametrize("steps, n, words", [(10**12, 2, "steps=1000000000000: expected at most 1,000,000"),
                                             (10**6 + 1, 2, "steps=1000001: expected at most 1,000,000"),
                                             (3, 0, "x_T of shape (0, 2)")])
def test_samplers_refuse_huge_steps_and_empty_x_T_with_one_value_error(ring_run, sampler, steps, n, words):
    """Refused before the network is called: the model here fails its first call, so a sampler that
    let the value through fails at once instead of running 10⁶ steps."""
    from scoresde.core.model import EpsModel
    from scoresde.samplers import sample

    class Uncallable(EpsModel):
        sde = load_run(ring_run).model.sde

        def eps(self, x, t):
            raise RuntimeError("the sampler called the network")

    with pytest.raises(ValueError) as err:
        sample(Uncallable(), sampler, torch.zeros(n, 2), steps=steps)
    assert words in str(err.value) and len(str(err.value).splitlines()) == 1


def test_a_raw_pickle_as_ckpt_is_one_line_without_torchs_warning(tmp_path, capsys):
    """torch warns about the pickle protocol before refusing: a warning the program would print as
    two more lines on stderr (pytest would catch it, so the warnings are recorded here)."""
    import pickle
    import warnings

    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"format": "x"}, protocol=4))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert sample_main(["--ckpt", str(tmp_path / "raw.pt"), "--out", str(tmp_path / "s.png")]) == 2
    err = _one_line(capsys)
    assert "raw.pt" in err and [str(w.message) for w in seen] == []


# --- export: one unit, the umask, a full disk ----------------------------------------------------

@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
    from .test_interop import _random_run

    return _random_run(tmp_path_factory.mktemp("unet") / "run", channels=128)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exported_files_and_folders_follow_the_umask(unet_run, tmp_path, umask):
    from scoresde.interop import export_diffusers

    old = os.umask(umask)
    try:
        folder = export_diffusers(unet_run, tmp_path / "sub" / "export")
    finally:
        os.umask(old)
    for path in (tmp_path / "sub", folder, *folder.rglob("*")):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o777 if path.is_dir() else 0o666) & ~umask, (path, oct(mode))


def test_a_failed_export_is_an_os_error_and_leaves_no_temp_folder(unet_run, tmp_path, monkeypatch):
    import diffusers
    from safetensors import SafetensorError

    from scoresde.interop import export_diffusers

    def full(self, *a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              "message: \"No space left on device\" })")
    monkeypatch.setattr(diffusers.DDPMPipeline, "save_pretrained", full)
    (tmp_path / "keep").write_text("an old file")
    with pytest.raises(OSError) as err:
        export_diffusers(unet_run, tmp_path / "new" / "export")
    assert err.value.errno == 28
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no temp folder, no new folder
    assert (tmp_path / "keep").read_text() == "an old file"


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_a_real_file_size_limit_during_export_raises_os_error(unet_run, tmp_path):
    """In a forked child whose files cannot grow past 4 KB, the export fails with an ``OSError``
    (errno EFBIG) and leaves nothing behind; the parent folder's old file is whole."""
    from scoresde.interop import export_diffusers

    (tmp_path / "keep").write_text("an old file")
    report = tmp_path / "report.txt"
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            try:
                export_diffusers(unet_run, tmp_path / "export")
                text = "no error"
            except Exception as e:  # noqa: BLE001 - the type is what is tested
                text = f"{isinstance(e, OSError)} {getattr(e, 'errno', None)} {type(e).__name__}"
            fd = os.open(report, os.O_WRONLY | os.O_CREAT)
            os.write(fd, text.encode())
            os.close(fd)
            code = 0
        finally:
            os._exit(code)
    assert wait_status(pid) == 0
    import errno

    is_os_error, code, _ = report.read_text().split()
    assert is_os_error == "True" and code == str(errno.EFBIG), report.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "report.txt"]


def test_a_temp_folder_left_by_a_killed_export_is_removed_by_the_next(unet_run, tmp_path):
    from scoresde.interop import export_diffusers

    stale = tmp_path / ".export.abc123.tmp"
    (stale / "unet").mkdir(parents=True)
    export_diffusers(unet_run, tmp_path / "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_default_folder_taken_while_starting_is_refused_not_swapped(tmp_path, monkeypatch, capsys):
    """Another ``train`` of the same config makes ``runs/t`` a run between this one's first look and
    its look under the lock: refused (exit 2), rather than reading one folder and locking another."""
    import scoresde.training.run as run_module

    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "t.yaml", TINY_TOY)
    real, calls = run_module.choose_folder, []

    def racing(request):
        calls.append(1)
        if len(calls) == 2:  # the other process writes its config.yaml now
            (tmp_path / "runs" / "t").mkdir(parents=True)
            (tmp_path / "runs" / "t" / "config.yaml").write_text("seed: 0\n")
        return real(request)
    monkeypatch.setattr(run_module, "choose_folder", racing)
    assert train_main(["--config", "t.yaml"]) == 2
    assert "taken by another process" in _one_line(capsys)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "runs", "runs/t", "runs/t/config.yaml", "t.yaml"]
