"""Data-parallel measurement under torchrun: DDP or FSDP2, every rank timing the same steps.

`torchrun --nproc_per_node N -m flopbench run ... --dist ddp|fsdp` starts N processes; each builds the
model, wraps it (DDP, or FSDP2's `fully_shard` on every block and then the root, as torchtitan does)
and times its own steps on its own batch of `--batch-size` sequences. Rank 0 gathers every rank's step
times and reports per-GPU MFU / HFU, the aggregate tokens/s and the slowest rank; only rank 0 prints and
writes files.

Model FLOPs per GPU follow torchtitan's and Megatron-LM's convention: each rank is charged the FLOPs of
its own share of the global batch (here its `batch_size` x `seq_len` tokens), and MFU is computed per
GPU against one GPU's peak. Communication (all-reduce, all-gather, reduce-scatter) does no matmul FLOPs
and is not counted; it shows up as time.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from ..errors import UsageError

KINDS = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistInfo:
    kind: str  # "ddp" | "fsdp"
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def as_dict(self) -> dict:
        return asdict(self)


def init(kind: str, device_type: str) -> DistInfo:
    """Join the process group torchrun set up (nccl on CUDA, gloo on the CPU)."""
    if kind not in KINDS:
        raise UsageError(f"--dist {kind!r}: choose one of {', '.join(KINDS)}")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UsageError(f"--dist {kind} needs torchrun: torchrun --nproc_per_node N -m flopbench run ... --dist {kind}")
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistInfo(kind, dist.get_rank(), dist.get_world_size(), local_rank, backend)


def device_for(info: DistInfo, device_type: str) -> torch.device:
    return torch.device("cuda", info.local_rank) if device_type == "cuda" else torch.device("cpu")


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DDP around the model, or FSDP2 `fully_shard` on each block then the root (in place)."""
    if info.kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for block in model.h:
        fully_shard(block)
    fully_shard(model)
    return model


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out



def aggregate(per_rank: list[dict], tokens_per_rank: int) -> dict:
    """Aggregate throughput and the slowest rank from each rank's median step time (ms)."""
    tokens_per_s = [tokens_per_rank / (r["median_ms"] / 1e3) for r in per_rank]
    slowest = max(range(len(per_rank)), key=lambda i: per_rank[i]["median_ms"])
    return {
        "per_rank": [{"rank": i, **r, "tokens_per_s": t} for i, (r, t) in enumerate(zip(per_rank, tokens_per_s))],
        "aggregate_tokens_per_s": sum(tokens_per_s),
        "slowest_rank": slowest,
        "slowest_median_ms": per_rank[slowest]["median_ms"],
    }


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
