"""How fast the consumer applies with each CONSUMER_LANES: a stream of BENCH_LANES_USERS users'
creations then updates (2 events each), applied by a fresh consumer on a fresh FerretDB (the
harness's, on PostgreSQL) once per lane count in BENCH_LANES. It measures and prints; it asserts
nothing.

    .venv/bin/python bench/consumer_lanes.py        # BENCH_LANES=1,2,4 BENCH_LANES_USERS=20000
"""
import asyncio
import os
import sys
import time
from pathlib import Path

import nats as nats_py
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "integration"))
import harness  # noqa: E402
from test_consumer_support import Stream, make_event  # noqa: E402

USERS = int(os.environ.get("BENCH_LANES_USERS", "20000"))
LANES = os.environ.get("BENCH_LANES", "1,2,4").split(",")


def metric(url, name):
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def publish(nats, events):
    async def go():
        nc = await nats_py.connect(nats.url, **nats.client_options())
        js = nc.jetstream(timeout=30)
        for i in range(0, len(events), 1000):
            await asyncio.gather(*[js.publish(e[0], e[1], headers=e[2])
                                   for e in events[i:i + 1000]])
        await nc.close()
    asyncio.run(go())


def main():
    nats = harness.Nats()
    nats.start()
    Stream(nats).create()
    n = 2 * USERS
    publish(nats, [make_event("user_created", u, 1) for u in range(1, USERS + 1)] +
            [make_event("user_updated", u, 2) for u in range(1, USERS + 1)])
    for lanes in LANES:
        ferret = harness.FerretDB()
        ferret.start()
        port = harness.free_port()
        svc = harness.Service("notification-consumer", {
            "NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "LOG_LEVEL": "warn",
            "NOTIFICATION_CONSUMER_PORT": str(port), "NOTIFICATION_CONSUMER_BIND": "127.0.0.1",
            "CONSUMER_LANES": lanes, "CONSUMER_DURABLE": f"lanes{lanes}"})
        svc.start()
        url = f"http://127.0.0.1:{port}"
        t0, marks, done = time.time(), [], 0.0
        while done < n and time.time() - t0 < 900:
            done = metric(url, "consumer_events_applied_total") + \
                metric(url, "consumer_events_stale_total")
            marks.append((time.time() - t0, done))
            time.sleep(0.2)
        took = time.time() - t0
        first = next(t for t, d in marks if d >= n / 10)
        last9 = next((t for t, d in marks if d >= n * 0.9), took)
        print(f"CONSUMER_LANES={lanes}: {int(done)} of {n} events in {took:.1f}s, "
              f"{done / took:.0f}/s; first tenth {n / 10 / first:.0f}/s, "
              f"last tenth {n / 10 / max(took - last9, 0.01):.0f}/s", flush=True)
        svc.stop()
        ferret.stop()
    nats.stop()


if __name__ == "__main__":
    main()
