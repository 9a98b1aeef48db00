"""The meta-gradient captured as a CUDA graph: one launch per meta-batch instead of thousands.

At the meta-batch a CPU wants (32 tasks) a GPU meta-step is bound by kernel launches: Python issues
every small op of the vmapped inner loop, its second-order backward and the loss one by one. A CUDA
graph records the forward and backward once and replays them. The graph reads fixed (static) input
tensors, so each meta-batch is copied into them first and must have the captured shape: the same
number of tasks and the same padding widths. The optimizer step stays outside, after the loop's
finite checks, exactly as in `training.loop.fit`.

On a CPU there is nothing to capture: the same static-input path runs eagerly. That is what the CPU
test checks against `meta_gradients` — fresh inputs every call, gradients left in `.grad`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.training.adam import Adam
from metarec_tasks.training.loop import meta_gradients

WARM_UP_CALLS = 3  # eager calls on a side stream before capture, as CUDA graph capture requires


class GraphedMetaGradients:
    """`meta_gradients(model, optimizer, algorithm, batch)` for batches shaped like `example`,
    replayed from a CUDA graph when `example` is on a CUDA device. Single process only."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: Adam,
        algorithm: MetaAlgorithm,
        example: TaskBatch,
        precision: AbstractContextManager | None = None,
    ):
        self.inputs = example.map(torch.clone)
        self._eager = lambda: meta_gradients(model, optimizer, algorithm, self.inputs, precision=precision)
        self.graph: torch.cuda.CUDAGraph | None = None
        if example.user_rows.device.type != "cuda":
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_CALLS):
                self._eager()
        torch.cuda.current_stream().wait_stream(side)
        optimizer.zero_grad(set_to_none=True)  # the captured backward allocates `.grad` in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self._eager()

    def __call__(self, batch: TaskBatch) -> torch.Tensor:
        """The mean meta-loss of `batch`; its meta-gradient is left in `.grad` (overwritten, not added)."""
        _copy_into(self.inputs, batch)
        if self.graph is None:
            return self._eager()
        self.graph.replay()
        return self.loss


def _copy_into(static: TaskBatch, batch: TaskBatch) -> None:
    """Refresh the captured inputs in place; a batch of another shape cannot replay the graph."""
    for dst, src in zip(static.tensors(), batch.tensors(), strict=True):
        if dst.shape != src.shape:
            raise ValueError(
                f"a graphed meta-step replays one batch shape: captured {tuple(dst.shape)}, got "
                f"{tuple(src.shape)} (pad every meta-batch to the same tasks and widths)"
            )
        dst.copy_(src, non_blocking=True)
    static.user_ids = list(batch.user_ids)
