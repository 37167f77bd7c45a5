"""Cluster descriptions: which chip each rank of a run is (data/clusters/*.toml, `--cluster`).

A cluster lists its chip count and, per chip or per range of chips, that chip's hardware file
and overrides of its parameters, checked exactly like the data files and `--set`:

    name = "mixed-clock"
    chips = 8
    [[chip]]
    ranks = "0-3"                     # a chip number (3, "3") or an inclusive range ("0-3")
    [[chip]]
    ranks = "4-7"
    hw = "siracusa"                   # optional: data/hw NAME or a .toml path (default: --hw)
    compute.freq_hz = 1.8e8           # optional overrides, SECTION.KEY as with --set
    link.link_bytes_per_s = 5e8       # a chip's own link ports (bandwidth, latency, pJ/B)

Every chip is described once. A chip starts from its hardware file (the run's `--hw` with the
preset and `--set` applied; another file gets the preset only if it was fitted for that file),
then its entry's overrides; an entry may not set what `--set` sets (one place for each value).
The link values are the chip's ports: a message between two chips runs at the slower one's
bandwidth and the longer latency; the topology's structure (groups, factors, ports,
algorithm) is the whole cluster's.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from .config import ChipSpec, Topology, load_table, table_path, with_values
from .errors import UserError
from .tomltext import parse_sets

ENTRY_KEYS = ("ranks", "hw", "note")
LINK_KEYS = ("link_bytes_per_s", "link_latency_s", "link_pj_per_byte")     # per chip; the rest: topology's
MAX_CLUSTER_CHIPS = 4096


@dataclass(frozen=True)
class Cluster:
    """One ChipSpec per rank, and each rank's link values (None: the topology's for all): a
    Topology per rank, of which only the LINK_KEYS values are the chip's own."""
    name: str
    path: str            # the file it was read from
    chips: tuple
    links: tuple | None = None

    @property
    def size(self) -> int:
        return len(self.chips)


def _ranks(v, n: int, where: str) -> tuple[int, int]:
    """ranks = 3, "3" or "0-3" -> (first, last), inside 0..n-1."""
    if isinstance(v, int) and not isinstance(v, bool):
        a = b = v
    elif isinstance(v, str) and re.fullmatch(r"\s*[0-9]+\s*(-\s*[0-9]+\s*)?", v):
        a, _, b = v.partition("-")
        a, b = int(a), int(b or a)
    else:
        raise UserError(f"{where}: ranks must be a chip number or a range \"A-B\", got {v!r}")
    if not 0 <= a <= b < n:
        raise UserError(f"{where}: ranks {v!r} outside the cluster's chips 0..{n - 1}"
                        + (" (a range is \"low-high\")" if a > b else ""))
    return a, b


def _flatten(entry: dict, where: str) -> dict:
    """The entry's override tables as {"section.key": value} (TOML's dotted keys nest them)."""
    out = {}
    for sec, table in entry.items():
        if sec in ENTRY_KEYS:
            continue
        if not isinstance(table, dict):
            raise UserError(f"{where}: unknown key {sec!r} (allowed: {', '.join(ENTRY_KEYS)} and SECTION.KEY "
                            "overrides, e.g. compute.freq_hz = 1.8e8)")
        for key, v in table.items():
            if isinstance(v, dict):
                raise UserError(f"{where}: {sec}.{key} must be a value, got a table")
            out[f"{sec}.{key}"] = v
    return out


def load_cluster(name: str, topo: Topology, chip_of, fixed=()) -> Cluster:
    """Cluster `name` (data/clusters/NAME.toml or a .toml path). chip_of(hw) is the run's chip
    of hardware file hw (preset and --set applied); fixed: the parameters --set gives."""
    table, path = load_table("clusters", name, "cluster description")
    unknown = sorted(set(table) - {"name", "chips", "note", "chip"})
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: name, chips, note, [[chip]])")
    n = table.get("chips")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CLUSTER_CHIPS:
        raise UserError(f"{path}: chips must be an integer from 1 to {MAX_CLUSTER_CHIPS}, got {n!r}")
    entries = table.get("chip", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path}: chip must be an array of tables ([[chip]]), got {entries!r}")
    label = table.get("name", Path(path).stem)
    if not isinstance(label, str) or not label.strip():
        raise UserError(f"{path}: name must be a non-empty string, got {label!r}")
    chips, links, owner = [None] * n, [None] * n, [None] * n
    bases = {}
    for i, e in enumerate(entries, 1):
        where = f"{path} [[chip]] {i}"
        if "ranks" not in e:
            raise UserError(f"{where}: missing key ranks (a chip number or a range \"A-B\")")
        a, b = _ranks(e["ranks"], n, where)
        where = f"{path} [[chip]] ranks {e['ranks']}"
        for r in range(a, b + 1):
            if owner[r] is not None:
                raise UserError(f"{path}: chip {r} is described twice: in [[chip]] ranks {owner[r]!r} and "
                                f"ranks {e['ranks']!r}")
            owner[r] = e["ranks"]
        hw = e.get("hw")
        if hw is not None and (not isinstance(hw, str) or not hw.strip()):
            raise UserError(f"{where}: hw must be a hardware name or .toml path, got {hw!r}")
        values = _flatten(e, where)
        both = sorted(set(values) & set(fixed))
        if both:
            raise UserError(f"{where}: sets {both[0]}, and so does --set: give each value in one place")
        if hw not in bases:
            try:
                bases[hw] = chip_of(hw)
            except UserError as err:
                raise UserError(f"{where}: hw {hw!r}: {err}") from None
        chip, own = with_values(bases[hw], topo, values, where)       # names, types and ranges checked
        link = {k: v for k, v in values.items() if k.startswith("link.")}
        bad = sorted(k for k in link if k.split(".", 1)[1] not in LINK_KEYS)
        if bad:
            raise UserError(f"{where}: {bad[0]} is the topology's (every chip's), not one chip's; a chip may set "
                            f"{', '.join('link.' + k for k in LINK_KEYS)}")
        for r in range(a, b + 1):
            chips[r], links[r] = chip, own if link else None
    missing = [r for r in range(n) if chips[r] is None]
    if missing:
        raise UserError(f"{path}: chip(s) {_spans(missing)} of {n} not described: give every chip a [[chip]] "
                        "entry (ranks = \"A-B\"; no overrides: the run's --hw)")
    if all(x is None for x in links):
        return Cluster(label, path, tuple(chips))
    return Cluster(label, path, tuple(chips), tuple(topo if x is None else x for x in links))


def _spans(ranks: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    out, start = [], ranks[0]
    for i, r in enumerate(ranks):
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:          # the end of a run of ranks
            out.append(str(start) if start == r else f"{start}-{r}")
            start = ranks[i + 1] if i + 1 < len(ranks) else r
    return ", ".join(out)


def chip_key(chip: ChipSpec) -> tuple:
    """A hashable key of a chip's parameters (ChipSpec holds an unhashable origin table)."""
    return tuple(getattr(chip, f.name) for f in dataclasses.fields(chip) if f.name != "origin")


def link_key(topo: Topology | None) -> tuple | None:
    return None if topo is None else tuple(getattr(topo, k) for k in LINK_KEYS)


def run_cluster(name: str | None, hw: str, chip: ChipSpec, topo: Topology, preset: str, sets: list,
                values: dict | None) -> Cluster | None:
    """The run's Cluster (`--cluster name`), or None: its chips built like the run's `--hw`
    (`chip`: file, preset, --set strings `sets` and API overrides `values` applied)."""
    if name is None:
        return None
    from .presets import other_chip

    def chip_of(other):
        if other is None or table_path("hw", other).resolve() == table_path("hw", hw).resolve():
            return chip
        return other_chip(other, topo, preset, sets, values)
    return load_cluster(name, topo, chip_of, set(parse_sets(sets)) | set(values or {}))


def same_count(given: str, cluster: Cluster | None, chips: int, mpi: bool):
    """The cluster (`--cluster given`) describes the run's chips: refused otherwise, naming both counts."""
    if cluster is not None and cluster.size != chips:
        run = f"the MPI world size is {chips}" if mpi else f"the run has --chips {chips}"
        raise UserError(f"--cluster {given} describes {cluster.size} chips, but {run}: give as many chips "
                        "as the cluster has")
