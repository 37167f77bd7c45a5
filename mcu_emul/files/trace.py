"""Chrome / Perfetto trace of the emulated timeline: one track per chip, slices for layers,
all-reduces and kernels, waits (idle or link), and a flow arrow for every message."""
from __future__ import annotations


from .outputs import write_json


def chrome_trace(traces: list, freq_hz: float, meta: dict | None = None, names: list | None = None) -> dict:
    """traces: per rank, the ChipClock event lists (cycles of freq_hz, the run's reference
    clock); names: each rank's track name (default "chip N"). Times in the trace are emulated
    microseconds."""
    us = 1e6 / freq_hz
    ev = []
    for rank, events in enumerate(traces):
        name = names[rank] if names else f"chip {rank}"
        ev.append({"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": name}})
        ev.append({"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0, "args": {"sort_index": rank}})
        ev.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": 0, "args": {"name": "emulated clock"}})
        for e in events:
            kind = e[0]
            if kind == "X":
                _, name, start, dur, cat = e
                ev.append({"ph": "X", "name": name, "cat": cat, "pid": rank, "tid": 0,
                           "ts": start * us, "dur": dur * us, "args": {"cycles": dur, "start_cycle": start}})
            elif kind == "s":
                _, fid, ts, nbytes, dest = e
                ev.append({"ph": "s", "name": "message", "cat": "link", "id": fid, "pid": rank, "tid": 0,
                           "ts": ts * us, "args": {"bytes": nbytes, "to": dest}})
            elif kind == "f":
                _, fid, ts, _, src = e
                ev.append({"ph": "f", "bp": "e", "name": "message", "cat": "link", "id": fid, "pid": rank,
                           "tid": 0, "ts": ts * us, "args": {"from": src}})
    # flow ends bind to the enclosing slice: give each arrival a zero-length marker slice
    marks = [{"ph": "X", "name": "arrival", "cat": "marker", "pid": e["pid"], "tid": 0, "ts": e["ts"], "dur": 0}
             for e in ev if e["ph"] == "f"]
    sends = [{"ph": "X", "name": "send", "cat": "marker", "pid": e["pid"], "tid": 0, "ts": e["ts"], "dur": 0}
             for e in ev if e["ph"] == "s"]
    return {"traceEvents": ev + marks + sends, "displayTimeUnit": "ns", "otherData": meta or {}}


def write_trace(path, traces: list, freq_hz: float, meta: dict | None = None, names: list | None = None):
    write_json(path, chrome_trace(traces, freq_hz, meta, names), indent=None)
