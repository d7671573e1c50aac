"""Data-parallel training under ``torchrun``: who this process is, and the few collectives used.

``torchrun --nproc_per_node=N train.py ...`` starts N copies of train.py with RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT set. ``init_from_env()`` (called by ``cli.train.launch``, never at
import) joins them into one process group (gloo for CPU tensors, NCCL for CUDA ones) and agrees on
one start time, so every rank resolves the same Hydra run folder. Without those variables
everything here is a no-op: a plain ``python train.py`` is a world of one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported where a process group is used, not here: train.py imports this module first, and a
# refused config or an unknown key must not wait for torch (~1.5 s)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0  # writes artifacts and logs

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as torch_dist

            torch_dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj``, on every rank (any picklable object)."""
        if not self.enabled:
            return obj
        import torch.distributed as torch_dist

        box = [obj if self.is_main else None]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as torch_dist

        gathered = [None] * self.world_size
        torch_dist.all_gather_object(gathered, obj)
        return gathered

    def first(self, value):
        """The first rank's ``value`` that is not None, on every rank (e.g. a stop signal seen by one)."""
        if not self.enabled:
            return value
        return next((v for v in self.all_gather(value) if v is not None), None)

    def sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        return [sum(column) for column in zip(*self.all_gather(list(values)))]


SINGLE = Dist()


def init_from_env() -> tuple[Dist, dt.datetime]:
    """(this process's ``Dist``, the run's start time). Under torchrun (WORLD_SIZE > 1) this joins the
    process group and takes rank 0's start time, so every rank names the same run folder."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE, dt.datetime.now()
    import torch
    import torch.distributed as torch_dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    torch_dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    dist = Dist(torch_dist.get_rank(), world_size, local_rank)
    return dist, dist.broadcast(dt.datetime.now())


def run_then_exit(main: Callable[[], object], dist: Dist) -> None:
    """Run ``main``; under torchrun then leave the process group and end the process at once.

    Interpreter teardown after a distributed run can hang on the gloo/DDP objects still alive
    (seen here once in five SIGTERM stops: a rank sat in finalisation until torchrun killed it), so
    a rank exits with ``os._exit`` once its files are closed and its output flushed.
    """
    if not dist.enabled:
        main()
        return
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    import torch.distributed as torch_dist

    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (state_dict keys without ``module.``)."""
    from torch import nn

    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap(model: nn.Module, dist: Dist, device: torch.device) -> nn.Module:
    from torch import nn

    if not dist.enabled:
        return model
    ids = [device.index if device.index is not None else dist.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
