"""librdkafka's mock Kafka cluster, driven through its C API, for the kafka sink's tests.

No Kafka broker runs on this machine. librdkafka, which the confluent-kafka wheel bundles, has a
mock cluster in it: brokers on loopback ports that speak the real protocol, in this process.
confluent-kafka can only start one (``test.mock.num.brokers``); the functions that take a broker
down and bring it back, create a topic with a given number of partitions, or make the next
requests fail are in librdkafka's C API, which the bundled library exports. This module calls
them with ctypes, on the very library confluent-kafka has loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import confluent_kafka

_PRODUCER = 0  # RD_KAFKA_PRODUCER
_PRODUCE_API = 0  # the Kafka protocol's ApiKey of a Produce request
_ERRSTR_SIZE = 512
_lock = threading.Lock()
_library: list[ctypes.CDLL] = []


class MockClusterUnavailableError(RuntimeError):
    """librdkafka (with its mock cluster) could not be found or started."""


class MockCluster:
    """A running mock cluster; ``bootstrap_servers`` is what clients connect to. Start with ``mock_cluster``."""

    def __init__(self, brokers: int = 1) -> None:
        self._lib = _librdkafka()
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
        conf = self._lib.rd_kafka_conf_new()
        # The handle only owns the cluster; its own log lines (no brokers configured) are not wanted.
        self._lib.rd_kafka_conf_set(conf, b"log_level", b"0", errstr, _ERRSTR_SIZE)
        self._handle = self._lib.rd_kafka_new(_PRODUCER, conf, errstr, _ERRSTR_SIZE)
        if not self._handle:
            raise MockClusterUnavailableError(errstr.value.decode())
        self._cluster = self._lib.rd_kafka_mock_cluster_new(self._handle, brokers)
        if not self._cluster:
            self._lib.rd_kafka_destroy(self._handle)
            raise MockClusterUnavailableError("rd_kafka_mock_cluster_new failed")
        self.bootstrap_servers: str = self._lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()

    def create_topic(self, name: str, partitions: int = 4, replication_factor: int = 1) -> None:
        """Create ``name``; topics not created so are made on first use, with 4 partitions."""
        self._check(self._lib.rd_kafka_mock_topic_create(self._cluster, name.encode(), partitions, replication_factor))

    def broker_down(self, broker_id: int = 1) -> None:
        """Close the broker's connections and refuse new ones, as a broker that went away."""
        self._check(self._lib.rd_kafka_mock_broker_set_down(self._cluster, broker_id))

    def broker_up(self, broker_id: int = 1) -> None:
        """Let the broker accept connections again."""
        self._check(self._lib.rd_kafka_mock_broker_set_up(self._cluster, broker_id))

    def set_topic_error(self, topic: str, error: int) -> None:
        """Answer metadata requests for ``topic`` with this error code (``KafkaError.*``) until reset with 0."""
        self._lib.rd_kafka_mock_topic_set_error(self._cluster, topic.encode(), error)

    def fail_produce_requests(self, *errors: int) -> None:
        """Answer the next Produce requests with these error codes (``KafkaError.*``), one each."""
        codes = (ctypes.c_int * len(errors))(*errors)
        self._lib.rd_kafka_mock_push_request_errors_array(self._cluster, _PRODUCE_API, len(errors), codes)

    def close(self) -> None:
        """Stop the brokers; their clients see every connection drop."""
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._cluster = None
            self._lib.rd_kafka_destroy(self._handle)

    @staticmethod
    def _check(error: int) -> None:
        if error:
            raise MockClusterUnavailableError(f"the mock cluster answered {confluent_kafka.KafkaError(error).name()}")


@contextmanager
def mock_cluster(brokers: int = 1) -> Iterator[MockCluster]:
    """A mock cluster of ``brokers`` brokers, closed afterwards."""
    cluster = MockCluster(brokers)
    try:
        yield cluster
    finally:
        cluster.close()


def _librdkafka() -> ctypes.CDLL:
    with _lock:
        if not _library:
            _library.append(_declare(ctypes.CDLL(str(_library_path()))))
        return _library[0]


def _library_path() -> Path:
    # The wheel's copy (the one confluent-kafka runs on): confluent_kafka.libs/ on Linux,
    # confluent_kafka/.dylibs/ on macOS; a system librdkafka otherwise.
    package = Path(confluent_kafka.__file__).parent
    for folder in (package.parent / "confluent_kafka.libs", package / ".dylibs"):
        found = sorted(folder.glob("librdkafka*"))
        if found:
            return found[0]
    system = ctypes.util.find_library("rdkafka")
    if system is None:
        raise MockClusterUnavailableError("librdkafka not found beside confluent_kafka nor on the system")
    return Path(system)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Argument and result types of the functions used, as librdkafka's headers declare them."""
    pointer, text, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    signatures: dict[str, tuple[list[type], type | None]] = {
        "rd_kafka_conf_new": ([], pointer),
        "rd_kafka_conf_set": ([pointer, text, text, text, size], ctypes.c_int),
        "rd_kafka_new": ([ctypes.c_int, pointer, text, size], pointer),
        "rd_kafka_destroy": ([pointer], None),
        "rd_kafka_mock_cluster_new": ([pointer, ctypes.c_int], pointer),
        "rd_kafka_mock_cluster_destroy": ([pointer], None),
        "rd_kafka_mock_cluster_bootstraps": ([pointer], text),
        "rd_kafka_mock_topic_create": ([pointer, text, ctypes.c_int, ctypes.c_int], ctypes.c_int),
        "rd_kafka_mock_broker_set_down": ([pointer, ctypes.c_int32], ctypes.c_int),
        "rd_kafka_mock_broker_set_up": ([pointer, ctypes.c_int32], ctypes.c_int),
        "rd_kafka_mock_topic_set_error": ([pointer, text, ctypes.c_int], None),
        "rd_kafka_mock_push_request_errors_array": (
            [pointer, ctypes.c_int16, size, ctypes.POINTER(ctypes.c_int)],
            None,
        ),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = arguments
        function.restype = result
    return lib
