"""Micro-batching helpers: stack several robots' requests along the batch axis and split the answers back.

A request may itself carry a batch of ``n_i >= 1`` rows (first dim of every input). Requests can share one model
call when their non-batch dims agree; :func:`group_compatible` sorts them into such groups, :func:`stack` builds
one feed per group (``np.concatenate`` on axis 0: one copy, which the model call needs anyway), and
:func:`split` cuts every output back into per-request arrays (views, no copy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from robot_stack.errors import PolicyError

__all__ = ["batch_rows", "group_compatible", "split", "stack"]


def batch_rows(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> int:
    """The common first-dim size ``n`` of the named arrays (one request's batch rows).

    Raises:
        PolicyError: an array is 0-d or the arrays disagree on their first dim.
    """
    sizes = {name: (arrays[name].shape[0] if arrays[name].ndim else None) for name in names}
    distinct = set(sizes.values())
    if None in distinct or len(distinct) != 1:
        raise PolicyError(
            f"inputs must share one leading batch dim to be batched, got first dims {sizes}; send the same number of "
            f"rows in every input"
        )
    return int(next(iter(distinct)))  # type: ignore[arg-type]


def group_compatible(items: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> list[list[int]]:
    """Indices of ``items`` grouped so that within a group every named array has the same dtype and trailing
    (non-batch) shape; groups in order of first appearance."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, arrays in enumerate(items):
        key = tuple((arrays[n].dtype.str, arrays[n].shape[1:]) for n in names)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def stack(items: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate the named arrays of compatible ``items`` along axis 0; return the feed and each item's rows."""
    sizes = [batch_rows(arrays, names) for arrays in items]
    if len(items) == 1:
        return {n: np.asarray(items[0][n]) for n in names}, sizes
    return {n: np.concatenate([arrays[n] for arrays in items], axis=0) for n in names}, sizes


def split(outputs: Mapping[str, np.ndarray], sizes: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut every output along axis 0 into ``len(sizes)`` pieces of ``sizes`` rows (views).

    Raises:
        PolicyError: an output's first dim is not ``sum(sizes)`` (the model does not keep the batch axis).
    """
    total = sum(sizes)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise PolicyError(
                f"output {name!r} has shape {array.shape}; a batched model must return {total} rows on axis 0"
            )
    bounds = np.cumsum([0, *sizes])
    return [{n: a[bounds[i] : bounds[i + 1]] for n, a in outputs.items()} for i in range(len(sizes))]
