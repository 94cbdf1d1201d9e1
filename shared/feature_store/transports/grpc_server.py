"""The gRPC server of the online reads: featurestore.v1, health checking and reflection (``fs-grpc``).

    fs-grpc --address 0.0.0.0:50051 [--workers 2] [--threads 8] [--grace 8]

One process serves with a thread pool; ``--workers N`` forks N such processes sharing the port
(SO_REUSEPORT: the kernel spreads connections), as gunicorn serves the functions with one worker per
core. Each process builds its services (Redis and PostgreSQL pools) on first use, after the fork.

Besides ``featurestore.v1.FeatureStore`` every server answers the standard health checking service
(``grpc.health.v1.Health``: SERVING for "" and the service name, NOT_SERVING once shutting down) and
server reflection (``grpcurl -plaintext ADDRESS list``). SIGTERM (Cloud Run's stop) or SIGINT turns
health to NOT_SERVING, stops taking calls and lets those in flight finish for ``--grace`` seconds.
The Cloud Run service (terraform/modules/grpc_service) runs this with end-to-end HTTP/2 (h2c).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from feature_store.cli.runner import run_cli
from feature_store.logs import get_logger
from feature_store.transports.grpc_api import rpc_handler
from feature_store.wiring import services
from feature_store_client.v1 import SERVICE_NAME

log = get_logger("feature_store.grpc")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's default; a batch of 1,000 ids is ~15 KB, its answer ~250 KB


class GrpcServer:
    """One gRPC server process's server: started, then stopped gracefully."""

    def __init__(self, address: str, threads: int) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        self.server.add_generic_rpc_handlers((rpc_handler(),))
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        self.address = address.rsplit(":", 1)[0] + f":{self.port}"

    def start(self) -> GrpcServer:
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """NOT_SERVING first (load balancers stop sending), then finish what is in flight."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def serve(address: str, threads: int, grace_s: float) -> int:
    """Serve in this process until SIGTERM or SIGINT."""
    server = GrpcServer(address, threads).start()
    log.info("serving gRPC", extra={"fields": {"address": server.address, "pid": os.getpid(), "threads": threads}})
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    server.stop(grace_s)
    # Flushes the audit trail's queue within its bound: a forked worker leaves by os._exit, so no atexit runs.
    services().close()
    return 0


def serve_workers(address: str, workers: int, threads: int, grace_s: float) -> int:
    """Fork ``workers`` serving processes on one port; forward SIGTERM/SIGINT to them and wait."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the child: no gRPC object exists before this point, so forking is safe
            code = 1
            try:
                code = serve(address, threads, grace_s)
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fs-grpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True, help="host:port to listen on (0.0.0.0:50051 on Cloud Run)")
    parser.add_argument("--workers", type=int, default=1, help="serving processes sharing the port")
    parser.add_argument("--threads", type=int, default=8, help="calls served at once by each process")
    parser.add_argument("--grace", type=float, default=8.0, help="seconds calls in flight get at shutdown")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    if args.workers > 1 and args.address.endswith(":0"):
        parser.error("--workers above 1 needs a fixed port (each process would pick its own)")

    def body() -> int:
        services().settings.key_pepper()  # the settings, read and checked now (pools are built on first use,
        # after any fork); no key pepper (outside FS_AUTH_DEVELOPMENT) means no start
        if args.workers == 1:
            return serve(args.address, args.threads, args.grace)
        return serve_workers(args.address, args.workers, args.threads, args.grace)

    return run_cli("fs-grpc", body)


if __name__ == "__main__":
    sys.exit(main())
