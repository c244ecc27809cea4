"""Training in several processes (DDP, gloo on the CPU) equals training in one.

One ``torchrun --standalone --nproc_per_node 2`` launch runs this file as a script
(:func:`_worker`): every scenario trains in both processes and writes its weights and summaries
to a folder, which the tests then compare with each other and with a single-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from emae.errors import EmaeError
from emae.models import build_model
from emae.train import distributed
from emae.train.loop import LoopSettings, step_generator, train_loop
from emae.train.losses import vae_loss

WORLD_SIZE = 2
SETTINGS = LoopSettings(
    steps=8,
    batch_size=4,
    lr=1e-2,
    warmup_steps=2,
    val_every=2,
    checkpoint_every=4,
    precision="fp32",
    device="cpu",
    progress=False,
)
#: Items from this index on raise, in both processes at step 7 (items 28..31).
FAIL_AT = 7 * SETTINGS.batch_size


class Items(Dataset):
    """Item i is a fixed random (1, 8, 8) tensor; raises from ``fail_at`` on (a crash)."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.fail_at is not None and i >= self.fail_at:
            raise RuntimeError("simulated crash")
        return torch.rand((1, 8, 8), generator=torch.Generator().manual_seed(i))


def _model(name: str = "conv-ae", norm: str = "none") -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(name, channels=(8,), latent_channels=4, norm=norm)


def _loss(model, x, step, generator):
    return nn.functional.mse_loss(model(x), x), {"half": 0.5}


def _vae_loss(model, x, step, generator):
    total, _, kl = vae_loss(model, x, beta=1.0, generator=generator)
    return total, {"kl": kl.item()}


VAL = torch.stack([Items(64)[i] for i in range(40, 48)])


def _val_fn(model: nn.Module) -> float:
    return float(nn.functional.mse_loss(model(VAL), VAL))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _worker(out: Path) -> None:
    """Every scenario, in each of the torchrun processes."""
    info = distributed.init_from_env()
    rank = info.rank
    calls: dict[str, list[int]] = {"val_fn": [], "on_log": [], "save": []}

    def val_fn(model):
        calls["val_fn"].append(rank)
        return _val_fn(model)

    def on_log(step, logs, model):
        calls["on_log"].append(step)

    import emae.train.loop as training

    real_save = training.save_checkpoint

    def save(path, state):
        calls["save"].append(state["step"])
        real_save(path, state)

    training.save_checkpoint = save
    results: dict[str, object] = {"info": [info.rank, info.world_size, info.local_rank]}

    # (a, b) an uninterrupted run, with validation and logging
    model = _model()
    summary = train_loop(
        model, _loss, Items(64), SETTINGS, val_fn=val_fn, checkpoint=out / "full.pt", on_log=on_log
    )
    torch.save(_weights(model), out / f"full-{rank}.pt")
    results["summary"] = summary
    results["calls"] = {k: list(v) for k, v in calls.items()}

    # (c) interrupted at step 7 in both processes, then resumed
    try:
        train_loop(_model(), _loss, Items(64, FAIL_AT), SETTINGS, checkpoint=out / "cut.pt")
    except RuntimeError as exc:
        results["crash"] = str(exc)
    distributed.barrier()
    model = _model()
    train_loop(model, _loss, Items(64), SETTINGS, checkpoint=out / "cut.pt", resume=True)
    torch.save(_weights(model), out / f"resumed-{rank}.pt")

    # early stopping: rank 0's scores decide for both processes
    scores = iter([1.0, 0.5, 0.9, 0.8])
    stop = train_loop(
        _model(),
        _loss,
        Items(64),
        LoopSettings(**{**SETTINGS.__dict__, "val_every": 1, "patience": 2}),
        val_fn=lambda m: next(scores) if rank == 0 else 99.0,
    )
    results["early_stop"] = [stop["steps_done"], stop["best_val"], stop["stopped_early"]]

    # a VAE (its loss calls encode/decode, not forward) and BatchNorm layers on the CPU
    for name, norm in (("vae", "none"), ("conv-ae", "batch")):
        model = _model(name, norm)
        loss_fn = _vae_loss if name == "vae" else _loss
        train_loop(model, loss_fn, Items(64), SETTINGS)
        torch.save(_weights(model), out / f"{name}-{norm}-{rank}.pt")

    for name, change in (("odd_batch", {"batch_size": 3}), ("one_gpu", {"device": "cuda:1"})):
        try:
            train_loop(_model(), _loss, Items(64), LoopSettings(**{**SETTINGS.__dict__, **change}))
        except EmaeError as exc:
            results[name] = str(exc)

    (out / f"results-{rank}.json").write_text(json.dumps(results, default=float))
    distributed.cleanup()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """Run :func:`_worker` in two processes once; the folder of what they wrote."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(WORLD_SIZE), __file__, str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return out


def _results(out: Path) -> list[dict]:
    return [json.loads((out / f"results-{r}.json").read_text()) for r in range(WORLD_SIZE)]


def _assert_same(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


def test_two_processes_train_like_one_process_with_the_whole_batch(ddp_run):
    model = _model()
    single = train_loop(model, _loss, Items(64), SETTINGS, val_fn=_val_fn)
    reference = _weights(model)
    # (a) the halves of each batch and the averaged gradients give the single-process update
    _assert_same(torch.load(ddp_run / "full-0.pt"), reference, atol=1e-5)
    summaries = [r["summary"] for r in _results(ddp_run)]
    for s, h in zip(summaries[0]["history"], single["history"], strict=True):
        assert s["step"] == h["step"]
        assert s["loss"] == pytest.approx(h["loss"], abs=1e-5)  # averaged over both processes
        assert s["val_loss"] == pytest.approx(h["val_loss"], abs=1e-5)


def test_both_processes_end_with_the_same_weights_and_summary(ddp_run):
    for stem in ("full", "resumed", "vae-none", "conv-ae-batch"):
        _assert_same(torch.load(ddp_run / f"{stem}-0.pt"), torch.load(ddp_run / f"{stem}-1.pt"), 0)
    first, second = _results(ddp_run)
    assert first["info"] == [0, 2, 0] and second["info"] == [1, 2, 1]
    assert first["summary"] == second["summary"]
    assert first["summary"]["processes"] == 2 and first["summary"]["device"] == "cpu"
    assert first["early_stop"] == second["early_stop"] == [4, 0.5, True]


def test_a_vae_trains_through_its_own_methods(ddp_run):
    """Its loss calls encode/decode: without the gradients of both processes averaged, the two
    copies (different data, different noise) would drift apart; the previous test shows they
    do not, and here they moved."""
    trained = torch.load(ddp_run / "vae-none-0.pt")
    initial = _weights(_model("vae"))
    assert all(not torch.equal(trained[k], initial[k]) for k in initial if k.endswith("weight"))


def test_only_rank_0_validates_logs_and_writes(ddp_run):
    first, second = _results(ddp_run)
    assert first["calls"]["val_fn"] == [0, 0, 0, 0] and second["calls"]["val_fn"] == []
    assert first["calls"]["on_log"] == [2, 4, 6, 8] and second["calls"]["on_log"] == []
    assert first["calls"]["save"] == [4, 8] and second["calls"]["save"] == []


def test_an_interrupted_run_resumes_to_the_same_weights(ddp_run):
    first, _ = _results(ddp_run)
    assert first["crash"] == "simulated crash"
    _assert_same(torch.load(ddp_run / "resumed-0.pt"), torch.load(ddp_run / "full-0.pt"), 1e-7)


def test_the_batch_must_split_evenly(ddp_run):
    first, second = _results(ddp_run)
    expected = "batch_size must be a multiple of the number of processes, got batch_size=3 for 2"
    assert expected in first["odd_batch"] and expected in second["odd_batch"]


def test_each_process_picks_its_own_device(ddp_run):
    first, _ = _results(ddp_run)
    assert "device must be auto, cuda or cpu, got 'cuda:1'" in first["one_gpu"]


def test_a_single_process_needs_no_process_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_from_env() == distributed.DistInfo(0, 1, 0)
    assert not distributed.is_initialized() and distributed.is_main()
    distributed.barrier()
    distributed.cleanup()
    value = torch.tensor(2.5)
    assert distributed.mean(value) is value and distributed.broadcast(value) is value


def test_step_generators_differ_by_rank_and_rank_0_is_the_single_process_one():
    draws = [torch.rand(3, generator=step_generator(5, 2, rank)) for rank in range(3)]
    assert torch.equal(draws[0], torch.rand(3, generator=torch.Generator().manual_seed(5_000_017)))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    again = torch.rand(3, generator=step_generator(5, 2, 1))
    assert torch.equal(draws[1], again)


def test_sync_batchnorm_is_undone_on_exit():
    model = _model(norm="batch")
    before = dict(model.named_modules())
    parameters = list(model.parameters())
    with distributed.sync_batchnorm(model):
        assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        model.eval()
    assert dict(model.named_modules()) == before
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    with distributed.sync_batchnorm(model, enabled=False):
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


if __name__ == "__main__":  # the torchrun worker
    _worker(Path(sys.argv[1]))
