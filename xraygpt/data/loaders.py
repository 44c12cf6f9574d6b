"""Endless, resumable training loaders over one or several datasets; eval loaders.

The batch stream is a pure function of (seed, rank, world size, batch size,
step) — and, for WebDataset shards, of the number of workers — so a run
resumed at step ``s`` with ``start_step=s`` sees exactly the batches the
interrupted run would have seen next, without decoding the skipped images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import count
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from xraygpt.data.caption_dataset import collate
from xraygpt.data.wds_dataset import ShardCaptionDataset, endless_raw, seeded_decode

_MIX_TAG = 0x3111  # seeds the choice of dataset per step
_PERM_TAG = 0x9E37  # seeds the per-epoch permutations
_AUG_TAG = 0xA06  # seeds the random augmentation of each sample
_MIX_CHUNK = 4096  # steps whose dataset choices are drawn at once


def _aug_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([_AUG_TAG, *parts]).generate_state(1)[0])


class _EndlessBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (sample index, augmentation seed) for one rank, forever.

    Epoch ``e`` is a permutation of all indices seeded by (seed, dataset, e),
    the same on every rank. As in ``DistributedSampler`` it is padded from its
    start to a multiple of ``world_size`` and rank ``r`` takes positions
    ``r, r + world_size, ...``. Batches run on across epoch boundaries, so
    batch ``k`` holds this rank's stream positions ``k*B .. k*B + B - 1``.

    ``order``, when given, replaces the permutation: ``order(rng, B * world_size)``
    with the epoch's seeded generator (a dataset's ``epoch_order``, e.g. one that
    puts samples of similar length in the same global batch); ``None`` from it
    means a plain permutation.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        dataset_index: int,
        start_batch: int,
        order: Callable[[np.random.Generator, int], np.ndarray | None] | None = None,
    ) -> None:
        self.n = n
        self.order = order
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.dataset_index = dataset_index
        self.start_batch = start_batch
        self.per_rank = math.ceil(n / world_size)
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, _PERM_TAG, self.dataset_index, epoch])
            perm = self.order(rng, self.batch_size * self.world_size) if self.order else None
            self._perm = rng.permutation(self.n) if perm is None else perm
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, batch: int) -> list[tuple[int, int]]:
        out = []
        for position in range(batch * self.batch_size, (batch + 1) * self.batch_size):
            epoch, offset = divmod(position, self.per_rank)
            index = self._permutation(epoch)[(offset * self.world_size + self.rank) % self.n]
            seed = _aug_seed(self.seed, self.dataset_index, self.rank, position)
            out.append((int(index), seed))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in count(self.start_batch):
            yield self.indices(batch)


class _SeededView(Dataset):
    """``dataset[index]`` with the augmentation RNG seeded per sample.

    ``fork_rng`` keeps the caller's RNG untouched, so with ``num_workers=0``
    the model's own randomness (prompt choice, dropout) is not disturbed.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class _ShardBatches(IterableDataset):
    """Collated batches of a :class:`ShardCaptionDataset`, per rank and worker, forever.

    DataLoader hands out an IterableDataset's items round-robin over its
    workers, so global batch ``j`` comes from worker ``j % W``. Each worker
    plays the role of consumer ``rank * W + (worker + start_batch) % W`` and
    first skips, undecoded, the raw samples of the batches it would have
    produced before ``start_batch``. (A bad image met before the resume
    point shifts that worker's stream by one sample: exact otherwise.)
    """

    def __init__(
        self,
        dataset: ShardCaptionDataset,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        start_batch: int,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        logical = (worker + self.start_batch) % workers
        consumer = self.rank * workers + logical
        n_consumers = self.world_size * workers
        done = self.start_batch // workers + (1 if logical < self.start_batch % workers else 0)
        stream = endless_raw(self.dataset, consumer, n_consumers, self.seed)
        position = 0
        for _ in range(done * self.batch_size):
            next(stream)
            position += 1
        while True:
            samples, skipped = [], 0
            while len(samples) < self.batch_size:
                raw = next(stream)
                seed = _aug_seed(self.seed, consumer, position)
                position += 1
                sample = seeded_decode(self.dataset, raw, seed)
                if sample is None:
                    skipped += 1
                else:
                    samples.append(sample)
            batch = collate(samples)
            batch["skipped"] += skipped
            yield batch


def _identity(batch: Any) -> Any:
    return batch


def _mix_choices(chunk: int, probs: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _MIX_TAG, chunk])
    return rng.choice(len(probs), size=_MIX_CHUNK, p=probs)


class TrainLoader:
    """An endless iterator of training batches; see :func:`build_train_loader`."""

    def __init__(
        self,
        datasets: list[Dataset],
        names: list[str],
        ratios: list[float],
        loaders: list[DataLoader],
        seed: int,
        start_step: int,
    ) -> None:
        self.datasets = datasets
        self.names = names
        self.ratios = ratios
        self.step = start_step
        self._seed = seed
        self._loaders = loaders
        self._iters: list[Iterator | None] = [None] * len(loaders)
        total = sum(ratios)
        self._probs = np.asarray(ratios, dtype=np.float64) / total
        self._chunk = -1
        self._choices: np.ndarray | None = None
        self._bad_images = 0

    def dataset_for_step(self, step: int) -> int:
        """Index of the dataset that batch ``step`` is drawn from."""
        if len(self._loaders) == 1:
            return 0
        chunk, offset = divmod(step, _MIX_CHUNK)
        if chunk != self._chunk:
            self._choices = _mix_choices(chunk, self._probs, self._seed)
            self._chunk = chunk
        assert self._choices is not None
        return int(self._choices[offset])

    def __iter__(self) -> TrainLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        which = self.dataset_for_step(self.step)
        if self._iters[which] is None:
            self._iters[which] = iter(self._loaders[which])
        batch = next(self._iters[which])  # type: ignore[arg-type]
        self.step += 1
        self._bad_images += int(batch.get("skipped", 0))
        return batch

    def pop_bad_image_count(self) -> int:
        """Unreadable images skipped since the last call (all workers); resets to 0."""
        value, self._bad_images = self._bad_images, 0
        return value

    def close(self) -> None:
        """Stop the worker processes."""
        self._iters = [None] * len(self._loaders)


def _batches_per_dataset(start_step: int, probs: np.ndarray, seed: int) -> list[int]:
    """How many batches each dataset gave in steps ``0 .. start_step - 1``."""
    counts = np.zeros(len(probs), dtype=np.int64)
    if len(probs) == 1:
        counts[0] = start_step
        return counts.tolist()
    full, rest = divmod(start_step, _MIX_CHUNK)
    for chunk in range(full):
        counts += np.bincount(_mix_choices(chunk, probs, seed), minlength=len(probs))
    if rest:
        counts += np.bincount(_mix_choices(full, probs, seed)[:rest], minlength=len(probs))
    return counts.tolist()


def build_train_loader(
    datasets: Dataset | Sequence[Dataset] | Mapping[str, Dataset],
    batch_size: int,
    num_workers: int = 0,
    sample_ratios: Sequence[float] | None = None,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 42,
    start_step: int = 0,
    pin_memory: bool = False,
) -> TrainLoader:
    """An endless iterator of collated training batches for this rank.

    Args:
        datasets: the train datasets — :class:`CaptionDataset` (map-style,
            ``data_type: images``) and/or :class:`ShardCaptionDataset`
            (``data_type: wds``) — as a list, or a ``{name: dataset}`` dict.
        batch_size: samples per batch on this rank.
        num_workers: DataLoader worker processes *per dataset*.
        sample_ratios: relative weight of each dataset; each step draws its
            whole batch from one dataset, chosen with probability proportional
            to its ratio (as LAVIS's ``MultiIterLoader``). Default: each
            dataset's ``sample_ratio`` attribute (the builder sets it from the
            config's ``sample_ratio``), else 1. The choice is the same on all
            ranks.
        rank, world_size: this process's place under DDP. Map-style datasets
            are split like ``DistributedSampler`` (a permutation per epoch
            seeded by (seed, dataset, epoch), padded, rank ``r`` takes every
            ``world_size``-th index); shards are split among all ranks x
            workers, each reading different shards. Epochs follow each other
            without end, so the loader never runs dry; the runner decides
            what an epoch is (``iters_per_epoch``).
        seed: the run's seed; the batch order and the random crops depend
            only on it (and on rank, world size, batch size, and for shards
            num_workers), not on timing.
        start_step: the number of batches already consumed; the first batch
            returned is batch ``start_step``. Skipping costs no image
            decoding for map-style data (shards read, but do not decode,
            the skipped samples).
        pin_memory: passed to the DataLoaders.

    Returns:
        A :class:`TrainLoader`: ``next(loader)`` is a batch (see
        :func:`collate`: ``image`` [B, 3, H, W], ``caption``, ``image_id``,
        ``labels`` lists, ``skipped`` int); ``loader.step`` is the index of the
        next batch; ``loader.pop_bad_image_count()`` returns (and resets) the
        number of unreadable images skipped in all workers since the last
        call — call it at the end of each epoch and log it; ``loader.close()``
        stops the workers.
    """
    if isinstance(datasets, Mapping):
        names = [str(name) for name in datasets]
        items = list(datasets.values())
    elif isinstance(datasets, Dataset):
        items = [datasets]
        names = [getattr(datasets, "name", "dataset")]
    else:
        items = list(datasets)
        names = [getattr(ds, "name", f"dataset{i}") for i, ds in enumerate(items)]
    if not items:
        raise ValueError("build_train_loader needs at least one dataset")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    if sample_ratios is None:
        sample_ratios = [float(getattr(ds, "sample_ratio", 1.0)) for ds in items]
    ratios = [float(r) for r in sample_ratios]
    if len(ratios) != len(items):
        raise ValueError(f"{len(ratios)} sample_ratios for {len(items)} datasets")
    if any(r < 0 or not math.isfinite(r) for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"sample_ratios must be >= 0 with a positive sum, got {ratios}")

    probs = np.asarray(ratios) / sum(ratios)
    starts = _batches_per_dataset(start_step, probs, seed)
    loaders = []
    for index, (dataset, start) in enumerate(zip(items, starts, strict=True)):
        common = dict(num_workers=num_workers, pin_memory=pin_memory)
        if num_workers > 0:
            common.update(persistent_workers=False, prefetch_factor=2)
        if isinstance(dataset, ShardCaptionDataset):
            stream = _ShardBatches(dataset, batch_size, rank, world_size, seed, start)
            loaders.append(DataLoader(stream, batch_size=None, collate_fn=_identity, **common))
        elif isinstance(dataset, IterableDataset):
            raise TypeError(
                f"dataset {names[index]} is an IterableDataset that is not a "
                f"ShardCaptionDataset; build_train_loader cannot split it among ranks"
            )
        else:
            if len(dataset) == 0:  # type: ignore[arg-type]
                raise ValueError(f"dataset {names[index]} is empty")
            sampler = _EndlessBatchSampler(
                len(dataset),  # type: ignore[arg-type]
                batch_size,
                rank,
                world_size,
                seed,
                index,
                start,
                order=getattr(dataset, "epoch_order", None),
            )
            loaders.append(
                DataLoader(
                    _SeededView(dataset), batch_sampler=sampler, collate_fn=collate, **common
                )
            )
    return TrainLoader(items, names, ratios, loaders, seed, start_step)
