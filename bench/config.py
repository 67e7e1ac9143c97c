"""How much each workload does: the full run (the issue's sizes) and --quick."""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    warmup: int  # requests thrown away before each latency series
    sequential: int  # one-at-a-time appends, and raw publishes
    in_flight: int  # concurrent requests (one conversation each) and raw publishers
    seconds: float  # length of each 64-in-flight window
    visibility_pairs: int
    list_sizes: tuple[int, int]  # items in the small and the large conversation
    list_requests: int  # per size and page kind
    rebuild_events: int
    memory_conversations: int
    responses: int  # streamed responses one at a time, per series (and raw flows)
    responses_in_flight: int  # concurrent streamed responses (the worker runs 16 at a time)


FULL = Sizes(
    warmup=50,
    sequential=2000,
    in_flight=64,
    seconds=15.0,
    visibility_pairs=1000,
    list_sizes=(100, 10_000),
    list_requests=500,
    rebuild_events=1_000_000,
    memory_conversations=100_000,
    responses=1000,
    responses_in_flight=16,
)

QUICK = Sizes(
    warmup=10,
    sequential=100,
    in_flight=64,
    seconds=1.0,
    visibility_pairs=50,
    list_sizes=(100, 1_000),
    list_requests=40,
    rebuild_events=4_000,
    memory_conversations=500,
    responses=30,
    responses_in_flight=16,
)


def sized(quick: bool, rebuild_events: int | None, conversations: int | None) -> Sizes:
    sizes = QUICK if quick else FULL
    if rebuild_events is not None:
        sizes = replace(sizes, rebuild_events=rebuild_events)
    if conversations is not None:
        sizes = replace(sizes, memory_conversations=conversations)
    return sizes
