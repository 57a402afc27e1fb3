"""Resident memory of this process: /proc/self/status, and a 10 ms peak sampler."""

from __future__ import annotations

import threading
import time


def status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon and RssFile in bytes."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


class PeakSampler:
    """Sampled peaks of RssAnon and RssFile while in the `with` block, and of their sum per
    `phase` (set it to label what runs now). VmHWM alone cannot split anon from file pages."""

    def __init__(self) -> None:
        self.peaks = {"RssAnon": 0, "RssFile": 0}
        self.phase = "setup"
        self.phase_peaks: dict[str, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            s = status()
            for key in self.peaks:
                self.peaks[key] = max(self.peaks[key], s[key])
            total = s["RssAnon"] + s["RssFile"]
            self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), total)
            time.sleep(0.01)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
