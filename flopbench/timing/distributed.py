"""Data-parallel measurement under torchrun: DDP or FSDP2, every rank timing the same steps.

`torchrun --nproc_per_node N -m flopbench run ... --dist ddp|fsdp` starts N processes; each builds the
model, wraps it (DDP, or FSDP2's `fully_shard` on every block and then the root, as torchtitan does)
and times its own steps on its own batch of `--batch-size` sequences. Rank 0 gathers every rank's step
times and reports per-GPU MFU / HFU, the aggregate tokens/s and the slowest rank; only rank 0 prints and
writes files.

Every rank must reach the same collectives in the same order, or the ones that did wait forever. So a
rank never leaves a row on its own: before building, after counting and after timing all ranks `agree`
on the status (an all-reduce of a failure flag, then the failing ranks' messages), and a row one rank
could not measure — out of memory, say — is an "oom" row on every rank before any time is gathered. The
counting phase runs one forward and backward and, for a train step, the optimizer's first step (which
allocates AdamW's state), so the allocations the timed steps will make are tried where the ranks still
agree. A rank that fails *inside* a timed step whose collectives the others are already in (FSDP's
all-gathers, DDP's gradient all-reduce), or after it (an optimizer step that runs out of memory later, the
others then in the next step's collectives), cannot be waited out that way: there the process group's
timeout (`TIMEOUT_ENV`, default `DEFAULT_TIMEOUT_S` seconds) ends the run with an error, and the rows
already written stay on disk.

Under FSDP2 a bf16 / fp16 run shards with ``MixedPrecisionPolicy(param_dtype=<run dtype>,
reduce_dtype=torch.float32)``, as torchtitan does: parameters are all-gathered and used in the run's
dtype, gradients reduced in fp32; the sharded fp32 weights stay the optimizer's.

Model FLOPs per GPU follow torchtitan's and Megatron-LM's convention: each rank is charged the FLOPs of
its own share of the global batch (here its `batch_size` x `seq_len` tokens), and MFU is computed per
GPU against one GPU's peak. Communication (all-reduce, all-gather, reduce-scatter) does no matmul FLOPs
and is not counted; it shows up as time.
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from ..errors import UsageError
from ..model.config import base_dtype
from .device import TORCH_DTYPES

KINDS = ("ddp", "fsdp")
#: Seconds a collective may wait for the other ranks before the run fails (environment variable to change it).
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "FLOPBENCH_DIST_TIMEOUT_S", 600


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
        raise UsageError(f"--dist {kind} needs torchrun: torchrun --nproc_per_node N -m flopbench run ... "
                         f"--dist {kind}")
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise UsageError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: give a positive number of seconds")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return DistInfo(kind, dist.get_rank(), dist.get_world_size(), local_rank, backend)


def device_for(info: DistInfo, device_type: str) -> torch.device:
    return torch.device("cuda", info.local_rank) if device_type == "cuda" else torch.device("cpu")


def _fsdp2():
    """(fully_shard, MixedPrecisionPolicy): public in torch.distributed.fsdp from torch 2.6, under
    torch.distributed._composable.fsdp in 2.5 (the floor, 2.5.1, in pyproject)."""
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    return fully_shard, MixedPrecisionPolicy


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device, dtype: str = "fp32") -> torch.nn.Module:
    """DDP around the model, or FSDP2 `fully_shard` on each block then the root (in place), with the
    mixed-precision policy of `dtype` (see the module docstring). Every parameter gets a gradient in every
    step, so DDP needs no search for unused ones: a mixture of experts keeps its experts' weights stacked
    (`model.gpt.Experts`), and an expert without tokens on a rank gets a zero gradient there.

    DDP runs with ``broadcast_buffers=False`` (``forward_sync_buffers=False`` from torch 2.13, which still
    syncs them once when wrapping): the only buffers are the constant RoPE tables, and broadcasting
    them would be a collective in every forward. ``gradient_as_bucket_view=True`` makes the gradients views
    into DDP's reduction buckets, so its backward needs no second copy of them (torch's DDP docs): the timed
    step then needs no more memory than the eager backward of the agreed counting phase."""
    if info.kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        names = inspect.signature(DistributedDataParallel).parameters
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"  # 2.13 renamed it
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       gradient_as_bucket_view=True, **{no_sync: False})
    fully_shard, MixedPrecisionPolicy = _fsdp2()
    kwargs = {}
    if base_dtype(dtype) in ("bf16", "fp16"):
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=TORCH_DTYPES[dtype], reduce_dtype=torch.float32)
    for block in model.h:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def agree(failure: tuple[str, str] | None, device: torch.device) -> list[tuple[int, str, str]]:
    """Every rank's verdict on one phase of a row: [] when all ranks succeeded, else (rank, status, message)
    of each rank that failed, the same list on every rank. Every rank must call it at the same point.

    An all-reduce (MAX) of a failure flag first — one small tensor, on the GPU for NCCL — and only when a
    rank failed a gather of the failures."""
    flag = torch.tensor([0 if failure is None else 1], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if not int(flag.item()):
        return []
    return [(rank, *f) for rank, f in enumerate(gather(failure)) if f is not None]


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
