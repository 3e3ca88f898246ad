"""Run by tests/test_train.py under `torch.distributed.run --nproc_per_node 2`: the same engine, DDP on CPU."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

torch.set_num_threads(1)
import torch.distributed as dist  # noqa: E402
from test_train import small_model, toy_data  # noqa: E402

events = []
model = small_model(toy_data())
model.train(epochs=2, lr=1e-3, batch_size=32, device="cpu", devices=2, strategy="ddp", progress=events.append)
z = model.get_latent_representation()
steps = [e.info["steps_per_epoch"] for e in events if e.info.get("event") == "epoch"]
# One file per rank: both ranks share torchrun's stdout, where their lines can interleave mid-line.
Path(f"result_{dist.get_rank()}.json").write_text(json.dumps({
    "rank": dist.get_rank(), "world": dist.get_world_size(), "epochs": len(model.history),
    "steps_per_epoch": steps[0], "zsum": float(abs(z).sum())}))
