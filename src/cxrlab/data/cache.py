"""The decoded-image cache: decode and resize once per data set and image size.

Each entry is a folder under ``<cache>/images/<key>/`` holding ``pixels.npy`` (uint8,
``(N, size, size)``, memory-mapped by every later run) and ``manifest.json`` (shape,
checksum, per-image SHA-1 of the file bytes, images that could not be decoded). The key
hashes the file list, sizes, modification times and the target size, so a changed file
gives a new entry. The manifest is written last: an entry without one, or whose pixels
do not match the recorded shape and checksum, is rebuilt, never trusted.

The pixels file is allocated in full before a byte is written: a disk that cannot hold it
fails at once with one line and the figure, and leaves nothing behind, instead of a
memory-mapped write dying with SIGBUS half way (a sparse file on a full disk).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrlab.core.errors import StorageError
from cxrlab.core.io import atomic_path, file_lock, make_dir, read_json, write_json
from cxrlab.core.paths import cache_root
from cxrlab.core.progress import progress_bar
from cxrlab.data.images import decode_file, resize_array
from cxrlab.data.sources import SourceListing

CACHE_FORMAT = 1
_CHUNK = 64


@dataclass
class DecodedImages:
    pixels: np.ndarray  # (N, size, size) uint8, memory-mapped
    digests: list[str]  # SHA-1 of each file's bytes ("" for array sources)
    bad: dict[int, str]  # index -> reason the image could not be decoded
    key: str
    decoded: int  # images decoded by this call: 0 when the cache answered


def source_key(listing: SourceListing, size: int) -> str:
    """A hash of what the decoded pixels depend on: the files, their sizes and times, the size."""
    digest = hashlib.sha256(f"cxrlab-images-v{CACHE_FORMAT}|{size}|{listing.kind}".encode())
    stat_paths = [listing.location] if listing.kind == "npz" else listing.files
    for path in stat_paths:
        try:
            stat = os.stat(path)
            digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{os.path.abspath(path)}|missing\n".encode())
    if listing.kind == "npz":
        digest.update("\n".join(listing.files).encode())
    return digest.hexdigest()[:32]


def decoded_images(
    listing: SourceListing, size: int, cache_dir: str | os.PathLike | None = None, show_progress: bool = True
) -> DecodedImages:
    """The decoded pixels of ``listing`` at ``size``: from the cache, else decoded now and cached."""
    key = source_key(listing, size)
    entry = cache_root(cache_dir) / "images" / key
    cached = _load_entry(entry)
    if cached is not None:
        return DecodedImages(*cached, key=key, decoded=0)
    with file_lock(entry / "pixels"):
        # Another process may have built the entry while this one waited for the lock.
        cached = _load_entry(entry)
        if cached is not None:
            return DecodedImages(*cached, key=key, decoded=0)
        _build_entry(entry, listing, size, show_progress)
        loaded = _load_entry(entry)
    if loaded is None:
        raise OSError(f"the decoded-image cache entry {entry} did not read back after it was written")
    pixels, digests, bad = loaded
    return DecodedImages(pixels, digests, bad, key=key, decoded=len(listing))


def pixels_checksum(pixels: np.ndarray) -> str:
    crc = 0
    flat = pixels.reshape(-1)
    step = 1 << 24
    for start in range(0, flat.size, step):
        # An ndarray has the buffer protocol; numpy's stubs declare __buffer__ for Python >= 3.12 only.
        crc = zlib.crc32(np.ascontiguousarray(flat[start : start + step]), crc)  # type: ignore[arg-type]
    return f"{crc:08x}"


def _load_entry(entry: Path) -> tuple[np.ndarray, list[str], dict[int, str]] | None:
    manifest_path, pixels_path = entry / "manifest.json", entry / "pixels.npy"
    if not manifest_path.exists() or not pixels_path.exists():
        return None
    try:
        manifest = read_json(manifest_path)
        pixels = np.load(pixels_path, mmap_mode="r", allow_pickle=False)
        shape, checksum, digests = manifest["shape"], manifest["checksum"], manifest["digests"]
        bad = {int(k): str(v) for k, v in manifest["bad"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # Unreadable, truncated or a manifest of another shape: rebuilt, never trusted.
        return None
    if manifest.get("format") != CACHE_FORMAT or list(pixels.shape) != shape or pixels.dtype != np.uint8:
        return None
    if len(digests) != shape[0] or any(not 0 <= k < shape[0] for k in bad):
        return None
    if pixels_checksum(pixels) != checksum:
        return None
    return pixels, digests, bad


def gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def check_space(folder: Path, needed: int, what: str) -> None:
    """Refuse a write of ``needed`` bytes that ``folder``'s disk cannot hold, with the figures."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself will say
    if needed > free:
        raise StorageError(
            f"{what} needs {gigabytes(needed)} in {folder}, which has {gigabytes(free)} free: "
            "use a smaller --image-size, free some space, or choose another --cache-dir",
            errno.ENOSPC,
        )


def _allocate(path: Path, n_bytes: int) -> None:
    """Reserve the file's blocks now: a full disk fails here, not as SIGBUS in a mapped write."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, n_bytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def _build_entry(entry: Path, listing: SourceListing, size: int, show_progress: bool) -> None:
    make_dir(entry)
    n = len(listing)
    digests = [""] * n
    bad: dict[int, str] = {}
    check_space(entry, n * size * size, f"the decoded-image cache of {n} images at {size} px")
    with atomic_path(entry / "pixels.npy") as tmp:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size))
        _allocate(tmp, os.path.getsize(tmp))
        if listing.kind == "npz":
            _fill_from_arrays(pixels, listing, size, show_progress)
        else:
            _fill_from_files(pixels, digests, bad, listing.files, size, show_progress)
        pixels.flush()
        checksum = pixels_checksum(pixels)
        del pixels
    manifest = {
        "format": CACHE_FORMAT,
        "source": listing.location,
        "size": size,
        "shape": [n, size, size],
        "checksum": checksum,
        "digests": digests,
        "bad": {str(k): v for k, v in bad.items()},
    }
    try:
        write_json(entry / "manifest.json", manifest)
    except BaseException:
        # Pixels without a manifest would be rebuilt anyway: leave nothing half made.
        with contextlib.suppress(OSError):
            (entry / "pixels.npy").unlink()
        raise


def _fill_from_arrays(pixels: np.ndarray, listing: SourceListing, size: int, show_progress: bool) -> None:
    assert listing.arrays is not None  # an npz listing carries its arrays
    start = 0
    with progress_bar(f"Resizing {Path(listing.location).name}", len(listing), enabled=show_progress) as advance:
        for split in ("train", "val", "test"):
            images = listing.arrays.get(split)
            if images is None:
                continue
            for i, image in enumerate(images):
                if image.ndim == 3:  # RGB MedMNIST sets: luminance, like the file path
                    image = np.round(image[..., :3].astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
                pixels[start + i] = resize_array(image, size)
            start += len(images)
            advance(len(images))


def _decode_chunk(args: tuple[list[str], int]) -> list[tuple[np.ndarray | None, str, str]]:
    paths, size = args
    return [decode_file(path, size) for path in paths]


def _fill_from_files(pixels, digests, bad, files: list[str], size: int, show_progress: bool) -> None:
    chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    workers = min(os.cpu_count() or 1, len(chunks))
    with progress_bar(f"Decoding {len(files)} images at {size} px", len(files), enabled=show_progress) as advance:
        if workers <= 1:
            results = map(_decode_chunk, [(c, size) for c in chunks])
            _store(results, pixels, digests, bad, advance)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                _store(pool.map(_decode_chunk, [(c, size) for c in chunks]), pixels, digests, bad, advance)


def _store(results, pixels, digests, bad, advance) -> None:
    index = 0
    for chunk in results:
        for image, digest, reason in chunk:
            digests[index] = digest
            if image is None:
                bad[index] = reason
            else:
                pixels[index] = image
            index += 1
        advance(len(chunk))
