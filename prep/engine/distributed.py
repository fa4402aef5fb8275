"""Who this process is in a torchrun job, and the few collective steps training needs.

Run alone, a process is rank 0 of a world of 1 and nothing here does anything. Under
``torchrun --nproc-per-node N prep train ...`` each process reads its rank from the
environment torchrun sets, joins the process group (NCCL on GPUs, Gloo on CPU), takes
its own GPU, trains on its own share of every epoch (``SeededSampler``) and sums its
counts with the others so that every rank reports and decides on the same metrics. Only
rank 0 writes files (``prep.engine.run_folder.RunIO``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @classmethod
    def from_env(cls) -> "World":
        """The world torchrun described in RANK, LOCAL_RANK and WORLD_SIZE (or a world of 1)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, requested: str | None) -> torch.device:
        """``requested``, else CUDA when present (this rank's own GPU under torchrun), else CPU.

        Raises:
            UsageError: a device that is not a device name, or a GPU this machine lacks.
        """
        from prep.errors import UsageError

        if requested:
            try:
                device = torch.device(requested)
            except RuntimeError:
                raise UsageError(f"--device must be cpu, cuda, cuda:N or mps, not {requested!r}") from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise UsageError(f"--device {requested}: this machine has no CUDA GPU that torch can use; leave out --device to train on the CPU")
            if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
                raise UsageError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
        else:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cuda" and self.distributed and device.index is None:
            device = torch.device("cuda", self.local_rank)
        return device

    def join(self, device: torch.device) -> None:
        """Join the process group once (a no-op alone or when already joined)."""
        if not self.distributed or torch.distributed.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (``values`` itself when alone)."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def sum_tensor(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``tensor`` summed over all ranks, back on the CPU."""
        if not self.distributed:
            return tensor
        on_device = tensor.to(device)
        torch.distributed.all_reduce(on_device)
        return on_device.cpu()

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def pick_device(requested: str | None) -> torch.device:
    """``requested``, else CUDA when present (this process's GPU under torchrun), else CPU."""
    return World.from_env().device(requested)
