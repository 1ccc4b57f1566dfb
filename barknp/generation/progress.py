"""Progress bars of the generation loops, through tqdm, which is imported only when a bar is shown:
its import is ~30 ms of a warm start's time to the first token, and most callers pass
``silent=True``."""

from __future__ import annotations

from collections.abc import Iterable


class _Hidden:
    """What a silent loop gets instead of a bar: iterates the iterable, ignores updates."""

    def __init__(self, iterable: Iterable | None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable: Iterable | None = None, total: int | None = None, silent: bool = False):
    """``tqdm.tqdm(iterable, total=total)``, or a stand-in that shows nothing when ``silent``."""
    if silent:
        return _Hidden(iterable)
    import tqdm

    return tqdm.tqdm(iterable, total=total)
