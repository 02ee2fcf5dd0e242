"""Benchmark: the relay on several hosts behind one address, through one Redis.

Each host is a Linux network namespace with an address of its own on a bridge (its own network
stack, loopback and port 6000), running `callrelay serve`; Redis and an nginx load balancer
listen on the bridge's address, where the load generator sends every stream and every
listener, as Twilio and browsers would reach one public address. A listener lands on any host,
so about half of the audio it hears crosses from another host through Redis.

With `--shared-history` the hosts also share the history as users who outgrow one host run
it: the index in PostgreSQL (Debian's, a throwaway cluster on the bridge's address) and each
complete call's files in an S3-compatible store (moto's server, there too), so every call is
indexed as it goes and uploaded when it ends.

Needs root (namespaces), iproute2, nginx and redis-server (and postgresql, for
`--shared-history`); the hosts share this machine's cores with the balancer, Redis and the
load generator, so the figures to read are the cost and latency per relay process, beside
`callrelay bench relay --workers N` on one host.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import requests

from benchmarks.meter import ProcessMeter
from benchmarks.relay import HEADER, Server, measure
from callrelay.access import generate_token

BRIDGE = "crbench0"
SUBNET = "10.77.0"
FRONT = f"{SUBNET}.1"
"""The bridge's address: the load balancer and Redis, as the one address clients see."""
BALANCER_PORT = 8080
REDIS_PORT = 6379
RELAY_PORT = 6000

BALANCING = {
    "round-robin": "",
    # A call's stream (/stream/<CallSid>) and the listeners that name it (?callSid=) on one
    # host; a client following every call names none and lands anywhere.
    "call": "hash $call consistent;",
}

NGINX_CONFIG = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    map $uri $stream_call {{ "~^/stream/(?<sid>CA[0-9a-fA-F]{{32}})$" $sid; default ""; }}
    map $arg_callSid $listener_call {{ "" $request_id; default $arg_callSid; }}
    map $stream_call $call {{ "" $listener_call; default $stream_call; }}
    upstream callrelay {{ {balancing} {servers} }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen {front}:{port};
        location / {{
            proxy_pass http://callrelay;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


def sh(*command: str) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def host_address(number: int) -> str:
    return f"{SUBNET}.{10 + number}"


@contextlib.contextmanager
def network(hosts: int) -> Iterator[list[str]]:
    """A bridge and `hosts` namespaces on it; yields the namespaces' names."""
    teardown(hosts)
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{FRONT}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    names = []
    for number in range(1, hosts + 1):
        name, veth = f"crbench{number}", f"crbenchv{number}"
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "link", "set", veth, "master", BRIDGE, "up")
        inside = ["ip", "netns", "exec", name]
        sh(*inside, "ip", "addr", "add", f"{host_address(number)}/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        names.append(name)
    try:
        yield names
    finally:
        teardown(hosts)


def teardown(hosts: int) -> None:
    for number in range(1, hosts + 1):
        subprocess.run(["ip", "netns", "del", f"crbench{number}"], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", f"crbenchv{number}"], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited ({process.returncode})")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def shared_history(
    processes: list[subprocess.Popen[bytes]], cleanups: list[Callable[[], None]]
) -> dict[str, Any]:
    """PostgreSQL and an S3-compatible store on the bridge's address; the relays' settings
    for them, and the processes to meter."""
    from tests.postgres import PostgresServer
    from tests.s3_server import S3Server

    folder = Path(tempfile.mkdtemp(prefix="callrelay-hosts-postgres-"))  # the cluster's user
    database = PostgresServer(folder, host=FRONT, clients=f"{SUBNET}.0/24").create()
    store = S3Server(host=FRONT).start()
    assert store.process is not None
    processes.append(store.process)
    bucket = store.new_bucket()
    postmaster = int((database.data / "postmaster.pid").read_text().split()[0])
    cleanups += [database.stop, lambda: shutil.rmtree(folder, ignore_errors=True)]
    url = database.new_database()

    def stored() -> str:
        """How many calls are indexed and stored so far (the last ones are stored as the
        next round starts: a call is uploaded once it is complete)."""
        with psycopg.connect(url) as db:
            row = db.execute("SELECT count(*) FROM callrelay_calls").fetchone()
        calls = {key.split("/")[1] for key in store.objects(bucket)}
        return f"calls indexed {row[0] if row else 0}, stored {len(calls)}"

    return {
        "env": {"DATABASE_URL": url, **store.env(bucket)},
        "pids": {"postgres": postmaster, "s3": store.process.pid},
        "stored": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--workers", default="1", help="WORKERS on each host")
    parser.add_argument("--calls", default="50,100", help="comma-separated loads")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--listeners", choices=("per-call", "one", "none"), default="per-call")
    parser.add_argument(
        "--balance",
        choices=tuple(BALANCING),
        default="call",
        help="how nginx picks a host: by the call a connection names (default), or in turn",
    )
    parser.add_argument(
        "--shared-history",
        action="store_true",
        help="the index in PostgreSQL and the calls' files in an S3-compatible store",
    )
    args = parser.parse_args()
    missing = [tool for tool in ("ip", "nginx", "redis-server") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        raise SystemExit(f"needs root and {', '.join(missing) or 'nothing else'}")

    token = generate_token()
    processes: list[subprocess.Popen[bytes]] = []
    cleanups: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="callrelay-hosts-") as tmp, network(args.hosts) as ns:
        try:
            redis_password = generate_token()  # off loopback, Redis wants a password
            redis = subprocess.Popen(
                [
                    *("redis-server", "--bind", FRONT, "--port", str(REDIS_PORT), "--save", ""),
                    *("--requirepass", redis_password),
                ],
                stdout=subprocess.DEVNULL,
            )
            processes.append(redis)
            shared = shared_history(processes, cleanups) if args.shared_history else {}
            relays = []
            for number, name in enumerate(ns, start=1):
                env = {
                    **os.environ,
                    "PORT": str(RELAY_PORT),
                    "WORKERS": args.workers,
                    "REDIS_URL": f"redis://:{redis_password}@{FRONT}:{REDIS_PORT}/0",
                    "RELAY_API_TOKEN": token,
                    "ASR_ENGINE": "off",
                    "MAX_CALLS": "10000",
                    "CAPTURES_DIR": f"{tmp}/host{number}/captures",
                    "LOG_FILE": f"{tmp}/host{number}/media.log",
                    **shared.get("env", {}),
                }
                relay = subprocess.Popen(
                    ["ip", "netns", "exec", name, sys.executable, "-m", "callrelay", "serve"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(f"{tmp}/host{number}.err", "wb"),  # noqa: SIM115
                )
                processes.append(relay)
                wait_until_up(f"http://{host_address(number)}:{RELAY_PORT}/", relay)
                relays.append(relay)
            servers = " ".join(
                f"server {host_address(n)}:{RELAY_PORT};" for n in range(1, args.hosts + 1)
            )
            Path(f"{tmp}/nginx.conf").write_text(
                NGINX_CONFIG.format(
                    tmp=tmp,
                    servers=servers,
                    balancing=BALANCING[args.balance],
                    front=FRONT,
                    port=BALANCER_PORT,
                )
            )
            balancer = subprocess.Popen(
                ["nginx", "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
            )
            processes.append(balancer)
            url = f"http://{FRONT}:{BALANCER_PORT}"
            wait_until_up(url + "/", balancer)

            server = Server("callrelay", url, token, [r.pid for r in relays], lambda: None)
            print(
                f"{args.hosts} hosts x WORKERS={args.workers}, behind nginx at {url} "
                f"(balancing: {args.balance}), one Redis; "
                f"{args.seconds:.0f} s calls, {args.listeners} listeners; latency in ms"
            )
            print(HEADER)
            for calls in (int(n) for n in args.calls.split(",")):
                others = {
                    "nginx": ProcessMeter(balancer.pid),
                    "redis": ProcessMeter(redis.pid),
                    **{name: ProcessMeter(pid) for name, pid in shared.get("pids", {}).items()},
                }
                before = {name: meter.cpu_seconds() for name, meter in others.items()}
                started = time.monotonic()
                row = measure(server, calls, args.seconds, args.listeners)
                wall = time.monotonic() - started
                print(row.line(None), flush=True)
                busy = [f"{cores:.2f}" for cores in row.process_cores if cores >= 0.01]
                print(f"    cores of each relay process, busiest first: {' '.join(busy)}")
                beside = ", ".join(
                    f"{name} {(meter.cpu_seconds() - before[name]) / wall:.2f}"
                    for name, meter in others.items()
                )
                print(f"    cores beside the relays: {beside}", flush=True)
                for failure in row.result.failures[:3]:
                    print(f"    failure: {failure}")
                if shared:
                    print(f"    {shared['stored']()}", flush=True)
        finally:
            for process in reversed(processes):  # Redis last: the relays use it to stop
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
            for cleanup in cleanups:
                cleanup()
            for number in range(1, args.hosts + 1):
                log = Path(f"{tmp}/host{number}/media.log")
                problems = [
                    line
                    for line in (log.read_text().splitlines() if log.exists() else [])
                    if ('"level": "WARNING"' in line or '"level": "ERROR"' in line)
                    and "signatures_off" not in line
                ]
                for line in problems[:5]:
                    print(f"    host {number}: {line[:300]}")


if __name__ == "__main__":
    main()
