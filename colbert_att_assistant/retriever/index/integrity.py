"""Checksums of an index's data files, verified when the index is loaded, and the one error a damaged index gives.

Each file's sha256 is taken when it is written (`storage.write_generation`) and kept in the manifest. sha256 and
not a faster check: on this machine (SHA-NI) hashlib's sha256 runs at 1.5 GiB/s against 2.6 for zlib.crc32
(benchmarks/RESULTS.md), it needs no new dependency, and it is the checksum people can recompute with `sha256sum`.

What is verified when (`Verification`):
- Files that loading reads whole (the documents file with every passage's text and metadata, the FAISS index,
  attention weights, codebooks, centroid lists) are hashed before `load` returns: loading reads them anyway, so
  passage text or an audience tag that changed on disk is never served.
- Memory-mapped token arrays (bfloat16 vectors, residual codes) are what let an index larger than RAM open at
  once; hashing them at load would read every page. Their size is checked at load always, and their hash either
  at load too (FULL; AUTO when they total at most AUTO_FULL_AT_MOST_BYTES) or in a background thread
  (BACKGROUND; AUTO above that). A background failure is logged and makes every later search raise
  IndexCorruptError. Until it finishes, a damaged token vector can change a ranking, but not the text, metadata
  or filters of any passage, which were verified first.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from colbert_att_assistant.retriever.errors import IndexCorruptError
from colbert_att_assistant.retriever.index.manifest import DataFile, IndexManifest

logger = logging.getLogger(__name__)

AUTO_FULL_AT_MOST_BYTES = 256 << 20


class Verification(StrEnum):
    AUTO = "auto"  # FULL for small indexes, BACKGROUND for large memory-mapped token arrays
    FULL = "full"  # every file hashed before load returns
    BACKGROUND = "background"  # memory-mapped token arrays hashed in a background thread


def sha256_of(handle: BinaryIO) -> str:
    return hashlib.file_digest(handle, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_of(handle)


def rebuild_advice(directory: Path) -> str:
    return (
        "Rebuild the index from its documents: "
        f"`python -m colbert_att_assistant.knowledge_base.ingest --index-dir {directory}` for the knowledge base; "
        f"for another index delete {directory} and run `colbert-att build --index-dir {directory}` "
        "with its --corpus or --folder again."
    )


def unusable(directory: Path, problem: str) -> IndexCorruptError:
    """The error for a damaged index: one line naming the file and what is wrong, then how to get a working one."""
    return IndexCorruptError(f"{' '.join(problem.split())} {rebuild_advice(directory)}")


def mismatch(directory: Path, entry: DataFile, actual: str) -> IndexCorruptError:
    assert entry.sha256 is not None
    return unusable(
        directory,
        f"{directory / entry.name}: checksum mismatch (sha256 {actual[:16]}, the manifest says {entry.sha256[:16]}): "
        "the file changed after it was written.",
    )


def verify_file(directory: Path, entry: DataFile) -> None:
    if entry.sha256 is None:
        return
    actual = file_sha256(directory / entry.name)
    if actual != entry.sha256:
        raise mismatch(directory, entry, actual)


class IntegrityCheck:
    """The verification of one loaded generation; hashes of memory-mapped files may still be running."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._failure: str | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        directory: Path,
        manifest: IndexManifest,
        memory_mapped: set[str],
        verification: Verification = Verification.AUTO,
    ) -> IntegrityCheck:
        """Hash what must be verified before use (raising IndexCorruptError on a mismatch), start the rest."""
        check = cls(directory)
        if not manifest.has_checksums:
            logger.warning(
                "%s was written before index files carried checksums: loaded without verifying them. The next "
                "write of the index adds them (the knowledge base: "
                "`python -m colbert_att_assistant.knowledge_base.ingest --index-dir %s`).",
                directory,
                directory,
            )
            return check
        later = {key for key in memory_mapped if key in manifest.files}
        later_bytes = sum(manifest.files[key].bytes for key in later)
        verification = Verification(verification)
        if verification is Verification.FULL or (
            verification is Verification.AUTO and later_bytes <= AUTO_FULL_AT_MOST_BYTES
        ):
            later = set()
        for key, entry in manifest.files.items():
            if key not in later:
                verify_file(directory, entry)
        if later:
            # Opened now: a later write of the index removes this generation's files, and an open file stays
            # readable, so the check never mistakes a superseded generation for a damaged one.
            handles = [
                (manifest.files[key], (directory / manifest.files[key].name).open("rb")) for key in sorted(later)
            ]
            check._thread = threading.Thread(
                target=check._verify_in_background, args=(handles,), name=f"verify {directory.name}", daemon=True
            )
            check._thread.start()
        return check

    def _verify_in_background(self, handles: list[tuple[DataFile, BinaryIO]]) -> None:
        for entry, handle in handles:
            with handle:
                if self._failure is not None:
                    continue  # already failed: just close the rest
                try:
                    actual = sha256_of(handle)
                except OSError as exc:
                    self._failure = str(unusable(self.directory, f"{self.directory / entry.name}: unreadable ({exc})."))
                else:
                    if actual != entry.sha256:
                        self._failure = str(mismatch(self.directory, entry, actual))
                if self._failure is not None:
                    logger.error("%s", self._failure)

    @property
    def finished(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def raise_if_failed(self) -> None:
        """Raise if a check has failed so far (does not wait for one in progress)."""
        if self._failure is not None:
            raise IndexCorruptError(self._failure)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background hashes (True when all finished), raising IndexCorruptError if one failed."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.raise_if_failed()
        return self.finished
