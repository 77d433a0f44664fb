"""One lock per record and per training key, so that several `cee-bench run` processes can share one output folder (and
its model store): two of them never write the same file at once, and never train one key twice at the same moment;
the second takes other work meanwhile, or waits and then reuses what the first wrote.

Locks are `filelock` locks (`flock`, released by the kernel when the holding process dies, even by `kill -9`), in the
output folder itself so that processes on other machines of a cluster see them too (the folder must then be on a
shared filesystem whose locks work across machines, as NFSv4's and Lustre's do). A lock file is an empty file under
`<output_dir>/.locks/`, named after the path it guards (`sst2/full__seed42.json.lock`,
`models/sst2/<key>.lock`); it stays after release, as `flock` locks must (removing one would let two processes hold
"the" lock through two different files).

Order, so that no two processes wait on each other: a process holds at most one record lock, and takes a training
key's lock only inside it (never the other way round), releasing the key before it takes the next one.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from cee_bench.errors import UserError

LOCKS = ".locks"


def lock_path(output_dir: Path, target: Path) -> Path:
    """The lock file guarding `target`, a path inside `output_dir`."""
    output_dir = Path(output_dir)
    return output_dir / LOCKS / f"{Path(target).relative_to(output_dir)}.lock"


class Lock:
    """The lock of `target` (a path inside `output_dir`); `say` is told when this process has to wait for it."""

    def __init__(self, output_dir: Path, target: Path, *, say: Callable[[str], None]) -> None:
        self.path, self.name = lock_path(output_dir, target), Path(target).relative_to(output_dir)
        self.say, self.lock = say, FileLock(lock_path(output_dir, target))

    def take(self, *, wait: bool = True) -> bool:
        """Take the lock; when another process holds it, wait (saying so) or, without `wait`, return False."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.lock.acquire(timeout=0)
            except Timeout:
                if not wait:
                    return False
                self.say(f"  waiting for {self.name}: another run holds its lock")
                self.lock.acquire()
        except OSError as exc:
            raise UserError(f"cannot lock {self.path} (the output folder must be writable): "
                            f"{exc.strerror or exc}") from None
        return True

    def release(self) -> None:
        self.lock.release()


def when_free(output_dir: Path, target: Path, action: Callable[[], None]) -> None:
    """Run `action` holding `target`'s lock, unless another process holds it (then nothing is done: that process may
    be writing `target` now)."""
    lock = Lock(output_dir, target, say=lambda line: None)
    if lock.take(wait=False):
        try:
            action()
        finally:
            lock.release()


@contextmanager
def holding(output_dir: Path, target: Path, *, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock of `target` for the block, waiting (and saying so) while another process holds it."""
    lock = Lock(output_dir, target, say=say)
    lock.take()
    try:
        yield
    finally:
        lock.release()
