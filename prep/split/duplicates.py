"""Finding files with identical bytes, reading as little as possible.

Files are first grouped by their probe fingerprint (size, a checksum of the first 4 KiB
and the last 32 bytes), which every file already has; only files that share one are
hashed in full, and only hash matches count as duplicates.
"""

from __future__ import annotations

from collections import defaultdict

from prep.split.checks import Probe, full_hash


def find_duplicates(paths: list[str], probes: list[Probe]) -> tuple[list[list[int]], dict[int, str]]:
    """Sets of indexes of byte-identical files, and the full hashes that were computed.

    Args:
        paths: absolute paths.
        probes: their probes, in the same order.

    Returns:
        (groups, digests): each group lists two or more indexes, in path order; digests
        maps every index that needed a full hash to its hex digest.
    """
    by_fingerprint: dict[tuple, list[int]] = defaultdict(list)
    for index, probe in enumerate(probes):
        if probe.fingerprint:
            by_fingerprint[probe.fingerprint].append(index)
    digests: dict[int, str] = {}
    groups: list[list[int]] = []
    for candidates in by_fingerprint.values():
        if len(candidates) < 2:
            continue
        by_digest: dict[str, list[int]] = defaultdict(list)
        for index in candidates:
            digests[index] = full_hash(paths[index])
            by_digest[digests[index]].append(index)
        groups += [sorted(g) for g in by_digest.values() if len(g) > 1]
    return sorted(groups), digests
