"""Data-parallel meta-training over tasks with `torch.distributed` (gloo on CPU, NCCL on GPU).

Under `torchrun --nproc-per-node N` every rank holds the whole model, draws the same shuffled task
order from the shared seed, and takes a disjoint shard of every meta-batch. The ranks' meta-gradients
(model *and* algorithm parameters, such as learned inner learning rates) are summed, each weighted by
its shard's task count, and divided by the meta-batch size, so the update equals the single-process
update on the whole meta-batch, however the batch splits. This holds because every algorithm's
meta-gradient is a mean of per-task terms (Reptile's too: θ − mean adapted θ; the *value* of its
surrogate, only logged, is averaged over shards instead). Rank 0 alone writes files.

Without torchrun's environment there is no process group and every helper is a no-op, so a single
process computes exactly what it did before this module existed. `METAREC_TRAIN_NPROC=N` makes
`metarec train` re-launch itself under torchrun (what DVC and Airflow call stays `metarec train`).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from metarec_tasks.errors import ConfigError
from metarec_tasks.lock import Lock
from metarec_tasks.training.adam import Adam

log = logging.getLogger(__name__)

NPROC_ENV = "METAREC_TRAIN_NPROC"  # processes for `metarec train`; more than 1 re-launches under torchrun
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun in every worker it starts


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """The rank that writes the model, checkpoints and logs."""
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of `index` (sizes differ by at most one; a part may be empty)."""
        if self.size == 1:
            return index
        return torch.tensor_split(index, self.size)[self.rank]

    def average_gradients(
        self, optimizer: Adam, loss: torch.Tensor, local_tasks: int, total_tasks: int
    ) -> torch.Tensor:
        """Turn each rank's `.grad` (of its shard's mean loss) into the gradient of the mean loss over all
        `total_tasks`, and return that mean loss; identical on every rank. One all-reduce per step.

        A parameter keeps `.grad = None` only if it has no gradient on any rank, so the optimizer skips
        exactly the parameters a single process would skip (a rank with an empty shard has none).
        """
        if self.size == 1:
            return loss
        params = [p for group in optimizer.param_groups for p in group["params"]]
        summed = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params])
        present = [float(p.grad is not None) for p in params]
        extras = torch.tensor(present, dtype=summed.dtype, device=summed.device)
        loss_sum = loss.detach().to(summed.dtype).reshape(1) * local_tasks
        flat = torch.cat([summed * local_tasks, extras, loss_sum])
        dist.all_reduce(flat)
        offset, n_grads = 0, sum(p.numel() for p in params)
        for p, seen in zip(params, flat[n_grads : n_grads + len(params)].tolist(), strict=True):
            if seen > 0:
                p.grad = (flat[offset : offset + p.numel()] / total_tasks).view_as(p).to(p.dtype)
            offset += p.numel()
        return flat[-1] / total_tasks

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (e.g. validation error sums and counts), in place."""
        if self.size > 1:
            dist.all_reduce(values)
        return values

    def broadcast_state(self, *modules: torch.nn.Module, optimizer: Adam) -> None:
        """Start every rank from rank 0's weights and optimizer moments.

        Ranks run the same seeded set-up, which on CPU gives bit-identical states; on GPU some kernels
        (embedding backward) are not bit-reproducible, and ranks that drift apart never meet again.
        """
        if self.size == 1:
            return
        device = next(modules[0].parameters()).device
        tensors = [t for module in modules for t in module.state_dict().values()]
        tensors += [
            value
            for state in optimizer.state.values()
            for value in state.values()
            if torch.is_tensor(value) and value.device == device  # Adam's CPU `step` is equal anyway
        ]
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


SINGLE = World()


def init_distributed(device: torch.device) -> World:
    """Join torchrun's process group when its environment is set (NCCL for CUDA, gloo for CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" now means this rank's GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    world = World(dist.get_rank(), dist.get_world_size())
    if not world.is_main:
        logging.getLogger("metarec_tasks").setLevel(logging.WARNING)  # one rank tells the story
    log.info("data-parallel meta-training: %d processes, backend %s", world.size, dist.get_backend())
    return world


def requested_processes() -> int:
    """`METAREC_TRAIN_NPROC` (default 1): a deployment setting, like the device, not a parameter —
    the number of processes does not change the model, so DVC should not re-run `train` for it."""
    value = os.environ.get(NPROC_ENV, "1")
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{NPROC_ENV} must be a positive integer, got {value!r}")
    return int(value)


def relaunch_under_torchrun(argv: list[str], lock: Lock) -> None:
    """Become N torchrun workers running this `metarec` command when `METAREC_TRAIN_NPROC` > 1 and
    we are not one already; otherwise return and go on in this process.

    `exec`, not a child process: a scheduler that stops the task signals torchrun itself, which stops
    its workers, and sees torchrun's exit code; torchrun inherits the workspace lock.
    """
    nproc = requested_processes()
    if nproc == 1 or TORCHRUN_ENV in os.environ:
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command += ["-m", "metarec_tasks.orchestration.cli", *argv]
    log.info("re-launching under torchrun: %s", " ".join(command))
    lock.pass_to_exec()
    os.execv(sys.executable, command)
