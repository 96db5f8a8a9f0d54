"""The harness starts each server on free ports and each answers; restarts keep data."""
import asyncio


def test_postgres_answers_and_keeps_data_across_kill(pg):
    assert pg.sql("SELECT 1") == [(1,)]
    assert pg.sql("SELECT current_database(), current_user") == [("users_db", "postgres")]
    pg.sql("CREATE TABLE t (v int)")
    pg.sql("INSERT INTO t VALUES (%s)", 7)
    pg.kill()
    pg.start()
    assert pg.sql("SELECT v FROM t") == [(7,)]
    assert pg.stop() == 0


def test_postgres_instances_do_not_share_state(pg):
    assert pg.sql("SELECT to_regclass('t')") == [(None,)]


def test_nats_jetstream_answers(nats):
    import nats as nats_py

    async def check():
        nc = await nats_py.connect(nats.url, **nats.client_options())
        try:
            info = await nc.jetstream().account_info()
            return info.limits
        finally:
            await nc.close()

    assert asyncio.run(check()) is not None
    port = nats.port
    nats.restart()
    assert nats.port == port and nats.varz("healthz")["status"] == "ok"


def test_nats_syncs_every_write_to_disk(nats):
    """The harness runs nats-server with deploy/nats-server.conf, as make run does: a PubAck comes
    only after the message is on disk (the default syncs every 2 minutes)."""
    assert nats.varz("varz")["jetstream"]["config"]["sync_always"] is True


def test_ferretdb_insert_and_find(ferret):
    with ferret.client() as c:
        c.notifications_db.t.insert_one({"_id": 1, "name": "a"})
        assert c.notifications_db.t.find_one({"_id": 1}) == {"_id": 1, "name": "a"}
    ferret.kill()
    ferret.start()
    with ferret.client() as c:
        assert c.notifications_db.t.count_documents({}) == 1


def test_migrated_db(db):
    assert db.sql("SELECT count(*) FROM schema_migrations")[0][0] > 0
