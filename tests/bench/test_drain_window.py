"""The drain's steady window, and the machine's CPU use over exactly that window."""

from __future__ import annotations

from bench.host_cpu import Times
from bench.measures import CPU_SAMPLE_SECONDS, drain_rate, use_between
from bench.systems import Timing


def test_the_steady_window_runs_from_the_10th_to_the_90th_percentile_finish() -> None:
    timings = [Timing(started=100.0, finished=100.0 + i) for i in range(1, 101)]  # finishes 101..200

    drain = drain_rate(timings)

    assert (drain.steady_from, drain.steady_to) == (111.0, 190.0)
    assert drain.rate == 79 / 79.0


def test_cpu_use_is_taken_between_the_samples_around_the_window() -> None:
    # Idle until t=10, then fully busy from t=10 to t=20, idle again: 2 CPUs, 100 ticks a second each.
    samples = []
    busy = 0
    for step in range(0, 31):
        t = float(step)
        samples.append((t, Times(busy=busy, steal=0, total=200 * step)))
        if 10 <= step < 20:
            busy += 200

    use = use_between(samples, 10.5, 19.5)

    assert use is not None
    assert use.busy_pct == 100.0  # from the sample at 10 to the one at 20: all busy
    whole = use_between(samples, 0.0, 30.0)
    assert whole is not None
    assert round(whole.busy_pct, 6) == round(100 / 3, 6)


def test_no_use_when_the_samples_do_not_cover_the_window() -> None:
    samples = [(float(t), Times(busy=t, steal=0, total=2 * t)) for t in range(5, 10)]

    assert use_between(samples, 4.0, 8.0) is None  # nothing sampled before the start
    assert use_between(samples, 6.0, 11.0) is None  # nor after the end
    short = [(0.0, Times(0, 0, 0)), (CPU_SAMPLE_SECONDS, Times(1, 0, 2))]
    assert use_between(short, 0.0, CPU_SAMPLE_SECONDS) is None  # one sampling period: too short to tell
