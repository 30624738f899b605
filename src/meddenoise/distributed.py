"""Training on several processes (DistributedDataParallel), as `torchrun` starts them.

    torchrun --nproc-per-node 2 -m meddenoise train configs/default.yaml

`meddenoise.train.fit` asks this module four things and is otherwise unchanged:

- `start` joins the process group torchrun describes (gloo on the CPU, NCCL on GPUs); without
  torchrun (no ``WORLD_SIZE`` above 1) nothing happens and `Group` says rank 0 of 1.
- `shard` cuts each batch of the epoch into this rank's part.  Every rank draws the *whole*
  epoch from the same epoch-seeded generator (`data.epoch_batches`) and keeps rows
  ``[rank * B / N, (rank + 1) * B / N)``: the combined batch of a step is exactly the batch a
  single process would draw, so with the loss a mean over the batch, DDP's gradient average is
  the single-process gradient and the weights follow the single-process run (to float rounding).
  A batch size that the number of processes does not divide is refused.
- `wrap` puts the network in DDP, whose first step broadcasts rank 0's weights.  Networks with
  BatchNorm: on GPUs their layers become SyncBatchNorm (statistics over the combined batch); on
  the CPU PyTorch has no SyncBatchNorm, so each rank normalises with its own part's statistics
  and the run is *not* equivalent to one process (docs/training.md says so; the shipped models,
  cond_unet, have none).
- `gather` collects every rank's random states for the resume state, and `broadcast` hands rank
  0's validation score to all, so every rank takes the same decisions (best, early stopping).

Only rank 0 validates, writes checkpoints and logs.  These calls move this run's own objects
between its processes with pickle (torch.distributed's object collectives), never a file's
content.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Group", "broadcast", "gather", "shard", "start", "wrap"]


@dataclass(frozen=True)
class Group:
    """This process's place in the run: rank ``rank`` of ``size`` (0 of 1 alone)."""

    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.size > 1

    @property
    def writer(self) -> bool:
        """Whether this process validates, writes checkpoints and logs (rank 0)."""
        return self.rank == 0


def start() -> Group:
    """Join the process group torchrun set up in the environment; alone, rank 0 of 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return Group()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Group(rank=dist.get_rank(), size=dist.get_world_size())


def shard(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]], group: Group
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """This rank's rows of every batch (all of them alone)."""
    for noisy, clean, levels in batches:
        if not group.distributed:
            yield noisy, clean, levels
            continue
        count = len(noisy)
        if count % group.size:
            raise ValueError(
                f"a batch of {count} patches cannot be split evenly over {group.size} processes:"
                " choose batch_size and patches_per_epoch divisible by the number of processes"
            )
        part = count // group.size
        rows = slice(group.rank * part, (group.rank + 1) * part)
        yield noisy[rows], None if clean is None else clean[rows], levels[rows]


def wrap(network: nn.Module, group: Group) -> nn.Module:
    """The network in DistributedDataParallel when several processes train (else unchanged)."""
    if not group.distributed:
        return network
    from torch.nn.parallel import DistributedDataParallel

    if torch.cuda.is_available():
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return DistributedDataParallel(network)


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network inside a DDP wrapper (what checkpoints hold)."""
    return network.module if hasattr(network, "module") else network  # type: ignore[return-value]


def gather(value: Any, group: Group) -> list[Any]:
    """Every rank's `value`, in rank order (``[value]`` alone)."""
    if not group.distributed:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * group.size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast(value: Any, group: Group) -> Any:
    """Rank 0's `value` on every rank."""
    if not group.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish(group: Group) -> None:
    """Leave the process group (after the last collective)."""
    if group.distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
