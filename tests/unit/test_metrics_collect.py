"""The metrics collector in this process: --serve's address grammar, label values from shared
memory made safe, subscriber series from a registry as hostile as its bytes allow, and a
collector that reads afresh at every scrape, reports a feed's changes of state once, and
gives nothing once closed."""

from __future__ import annotations

import importlib.util
from typing import Any, Iterator, List, Tuple

import pytest

from pricefeed import FeedNotFound, Publisher
from pricefeed._observe import metrics as M
from pricefeed._registry.types import ReaderInfo, Readers
from pricefeed._roles.subscriber import FeedStatus

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("prometheus_client") is None,
    reason="prometheus_client is not installed (the metrics extra: pip install 'pricefeed[metrics]')",
)


@pytest.mark.parametrize(
    "text, want",
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:0", ("localhost", 0)),
        (":9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:65535", ("::", 65535)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("metrics.example:9464", ("metrics.example", 9464)),
    ],
)
def test_addresses_that_parse(text: str, want: Tuple[str, int]) -> None:
    assert M.parse_address(text) == want


@pytest.mark.parametrize(
    "text", ["", "9464", ":", "::1:9464", "[127.0.0.1]:1", "[::1]", "h:65536", "h:+1", "h:1 ", "h:١٢", "a/b:1", "[]:1"]
)
def test_addresses_that_do_not(text: str) -> None:
    with pytest.raises(ValueError):
        M.parse_address(text)


def test_url_of_brackets_ipv6() -> None:
    assert M.url_of("::1", 9464) == "http://[::1]:9464/metrics"
    assert M.url_of("127.0.0.1", 1) == "http://127.0.0.1:1/metrics"


def test_label_text_keeps_printable_text_and_escapes_the_rest() -> None:
    assert M.label_text(None) == ""
    assert M.label_text('desk "7" \\ {fx}=é') == 'desk "7" \\ {fx}=é'
    assert M.label_text("a\nb\x00c\x1b[31m") == "a\\nb\\x00c\\x1b[31m"
    assert M.label_text("bad\udcffbyte") == "bad\\udcffbyte"
    long = M.label_text("x" * 500)
    assert long == "x" * M.LABEL_MAX + "..."


def _status(**changes: Any) -> FeedStatus:
    base = FeedStatus(
        name="f", head_seq=10, symbols=2, capacity=64, ring_size=256, publisher_pid=123, publisher_alive=True,
        last_change_ns=1_700_000_000_000_000_000, ended=False, incarnation=99, created_ns=1_600_000_000_000_000_000,
        size=4096, publisher_epoch=1, owner="alice", mode=0o640,
    )  # fmt: skip
    return base._replace(**changes)


def _reader(slot: int, label: Any, state: str = "waiting", lag: Any = 0, lag_seconds: Any = 0.0,
            lapped: bool = False) -> ReaderInfo:  # fmt: skip
    return ReaderInfo(
        slot=slot, pid=1000 + slot, label=label, uid=1000, state=state, seq=7, delivered=5, gaps=1, missed=3,
        registered_ns=1_650_000_000_000_000_000, state_ns=1_700_000_000_000_000_000, conflate=True,
        filtered=False, is_async=True, lag=lag, lag_seconds=lag_seconds, lag_lower_bound=lapped,
    )  # fmt: skip


class _Once:
    """A collector of the families of one scrape (what FeedCollector yields), for rendering."""

    def __init__(self, readings: List[Tuple[str, M.Reading]]) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Any]:
        out = M._Families()
        for feed, reading in self.readings:
            out.f["up"].add_metric([feed], 1.0)
            out.add(feed, reading)
        return iter([f for f in out.families() if f.samples])


def _render(readings: List[Tuple[str, M.Reading]], openmetrics: bool = False) -> str:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Once(readings))  # type: ignore[arg-type]
    return (generate_openmetrics if openmetrics else generate_latest)(registry).decode()


def _samples(text: str, openmetrics: bool) -> List[Any]:
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


@pytest.mark.parametrize("openmetrics", [False, True])
def test_hostile_registry_entries_cannot_break_the_output(openmetrics: bool) -> None:
    """Labels a validating registry would refuse (the bytes are anyone's who can write the
    registry): each one an escaped, bounded label value; a slot listed twice gives one set of
    series; an idle subscriber has no lag series; a lapped one says so."""
    hostile = ["line\nbreak", 'quote"}\n# TYPE x counter', "nul\x00", "surrogate\udcff", "y" * 300, None]
    entries = [_reader(i, label) for i, label in enumerate(hostile)]
    entries.append(_reader(0, "the same slot again"))
    entries.append(_reader(9, "idle", state="idle", lag=None, lag_seconds=None))
    entries.append(_reader(10, "lapped", state="working", lag=5000, lag_seconds=2.5, lapped=True))
    readers = Readers(True, None, entries, 16, 2, 1)
    reading = M.Reading(_status(), readers, [], 1_700_000_001_000_000_000)
    text = _render([("f", reading)], openmetrics)
    samples = _samples(text, openmetrics)
    infos = [s.labels for s in samples if s.name == "pricefeed_subscriber_info"]
    assert sorted(i["label"] for i in infos) == sorted([M.label_text(label) for label in hostile] + ["idle", "lapped"])
    assert {i["slot"] for i in infos} == {"0", "1", "2", "3", "4", "5", "9", "10"}
    by_name = {(s.name, s.labels.get("label"), s.labels.get("state")): s.value for s in samples}
    assert by_name[("pricefeed_subscribers", None, None)] == len(entries)  # the registry's own count
    assert by_name[("pricefeed_registry_dead_entries", None, None)] == 2
    assert by_name[("pricefeed_registry_invalid_entries", None, None)] == 1
    assert ("pricefeed_subscriber_lag_changes", "idle", None) not in by_name
    assert ("pricefeed_subscriber_lag_seconds", "idle", None) not in by_name
    assert by_name[("pricefeed_subscriber_state", "idle", "idle")] == 1
    assert by_name[("pricefeed_subscriber_state", "idle", "waiting")] == 0
    assert by_name[("pricefeed_subscriber_lapped", "lapped", None)] == 1
    assert by_name[("pricefeed_subscriber_lag_changes", "lapped", None)] == 5000
    assert by_name[("pricefeed_subscriber_lag_seconds", "lapped", None)] == 2.5
    assert by_name[("pricefeed_subscriber_state_seconds", "lapped", None)] == pytest.approx(1.0)
    assert by_name[("pricefeed_subscriber_missed_total", "lapped", None)] == 3
    assert by_name[("pricefeed_subscriber_delivered_created", "lapped", None)] == pytest.approx(1.65e9)
    # No sample line was cut in two by a label: every line is a comment or a whole sample.
    for line in text.splitlines():
        assert line.startswith(("# ", "pricefeed_")), line


def test_a_registry_that_cannot_be_read_gives_no_subscriber_series() -> None:
    reading = M.Reading(_status(publisher_alive=False, publisher_clean=False), Readers(False, "no registry", [], 0, 0, 0),
                        [], 1_700_000_000_000_000_000)  # fmt: skip
    samples = {s.name: s.value for s in _samples(_render([("f", reading)]), False)}
    assert samples["pricefeed_registry_available"] == 0
    assert "pricefeed_subscribers" not in samples and "pricefeed_registry_capacity" not in samples
    assert samples["pricefeed_publisher_up"] == 0 and samples["pricefeed_publisher_last_exit_clean"] == 0
    assert samples["pricefeed_last_change_age_seconds"] == 0.0


def test_family_names_are_unique_and_follow_the_conventions() -> None:
    names = [name for _, _, name, _, _ in M.FAMILIES]
    keys = [key for key, _, _, _, _ in M.FAMILIES]
    assert len(set(names)) == len(names) and len(set(keys)) == len(keys)
    for _, kind, name, doc, labels in M.FAMILIES:
        assert name.startswith("pricefeed_") and not name.endswith(("_total", "_info", "_created")), name
        assert doc.endswith(".") and labels[:1] in ((), ("feed",)), name
        assert kind in ("gauge", "counter", "info"), name


def test_the_collector_reads_afresh_and_reports_each_change_of_state_once(feed: str) -> None:
    lines: List[str] = []
    collector = M.FeedCollector([feed], strict=False, report=lines.append)
    collector.open()

    def scrape() -> dict:
        return {s.name: s.value for family in collector.collect() for s in family.samples if s.labels.get("feed")}

    for _ in range(3):
        assert scrape() == {"pricefeed_up": 0.0}
    assert lines == [f"feed {feed!r}: no feed named {feed!r} on this machine (pricefeed_up 0 until it can be read)"]
    with Publisher.create(feed) as pub:
        pub.publish("A", 1.0)
        assert scrape()["pricefeed_changes_total"] == 1
        pub.publish("A", 2.0)
        assert scrape()["pricefeed_changes_total"] == 2
        assert lines[1:] == [f"feed {feed!r} is readable"]
        assert collector.scrapes == 5
        collector.close()
        assert list(collector.collect()) == []
        pub.unlink()


def test_the_strict_collector_raises(feed: str) -> None:
    collector = M.FeedCollector([feed])
    with pytest.raises(FeedNotFound):
        collector.open()
    with pytest.raises(FeedNotFound):
        list(collector.collect())
