"""What a job takes from the machine: worker threads, memory and disk (checked before any slow work), and a
progress bar on the terminal."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..adapters import DEFAULT_MAX_PARAMS
from ..errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

# layers (extracting) or genes (materializing) worked on at once, each on one torch thread: FFTs and small
# products scale better across tensors than inside one (docs/performance.md)
EXTRACT_WORKERS = max(1, min(4, os.cpu_count() or 1))


def progress_bar(total: int, description: str, enabled: bool) -> Any:
    """A per-gene progress bar on stderr, shown only on a terminal (logs and pipes stay clean)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="gene", disable=None if enabled else True, leave=False)


def check_memory(params: int, device: torch.device) -> None:
    import torch

    need = params * 4
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        available = free
    else:
        try:  # MemAvailable counts reclaimable page cache; free pages alone shrink after any large file write
            meminfo = Path("/proc/meminfo").read_text()
            available = int(re.search(r"MemAvailable:\s+(\d+)", meminfo).group(1)) * 1024  # type: ignore[union-attr]
        except (OSError, AttributeError, ValueError):
            try:
                available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                available = None
    if params > DEFAULT_MAX_PARAMS or (available is not None and need * 2 > available):
        raise InvalidConfigError(
            f"the target has {params:,} parameters and needs about {2 * need / 2**30:.1f} GiB to build "
            f"({(available or 0) / 2**30:.1f} GiB free on {device.type}); choose smaller sizes"
        )


def check_disk(params: int, out_dir: Path | None) -> None:
    need = params * 4
    folder = out_dir
    while folder is not None and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder or ".").free
    except OSError:
        free = None
    if params > DEFAULT_MAX_PARAMS or (free is not None and need > free):
        raise InvalidConfigError(
            f"the target has {params:,} parameters and needs about {need / 2**30:.1f} GiB to build on disk "
            f"({(free or 0) / 2**30:.1f} GiB free at {folder}); choose smaller sizes"
        )
