"""redis-py against Escabelo: python redis_py.py PORT PROTOCOL (2 or 3).

Prints OK on success; any failure raises (non-zero exit)."""
import sys

import redis

port, proto = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(host="127.0.0.1", port=port, protocol=proto, client_name="py-test")
assert r.ping() is True
info = r.info()
assert info["redis_version"].startswith("7."), info.get("redis_version")
assert info["loading"] == 0
assert "escabelo_version" in info
assert r.client_getname() in (b"py-test", "py-test")

assert r.set("py:a", "1") is True
assert r.get("py:a") == b"1"
assert r.get("py:missing") is None
assert r.set("py:a", "2", nx=True) is None
assert r.set("py:a", "2", xx=True, get=True) == b"1"
r.mset({"py:b": "x", "py:c": b"\r\n\x00\xff"})
assert r.mget(["py:a", "py:b", "py:c", "py:nope"]) == [b"2", b"x", b"\r\n\x00\xff", None]
assert r.exists("py:a", "py:b", "py:nope") == 2
assert r.delete("py:b") == 1
assert r.setnx("py:n", "1") is True
assert r.setnx("py:n", "1") is False
assert r.append("py:n", "23") == 3
assert r.strlen("py:n") == 3
assert r.getdel("py:n") == b"123"
assert r.type("py:a") in (b"string", "string")
assert r.ttl("py:a") == -1
assert r.ttl("py:nope") == -2
try:
    r.set("py:e", "v", ex=10)
    raise AssertionError("EX accepted")
except redis.ResponseError as e:
    assert "not supported" in str(e)

# scan_iter over more keys than one SCAN reply.
for i in range(0, 300, 50):
    r.mset({f"py:s:{j:03d}": str(j) for j in range(i, i + 50)})
seen = set(r.scan_iter(match="py:s:*", count=17))
assert seen == {f"py:s:{j:03d}".encode() for j in range(300)}, len(seen)
assert len(r.keys("py:s:1*")) == 100

# Pipelines: transactional (MULTI/EXEC, the default) and not.
p = r.pipeline(transaction=True)
p.set("py:t1", "a")
p.get("py:t1")
p.mset({"py:t2": "b", "py:t3": "c"})
p.delete("py:t3")
assert p.execute() == [True, b"a", True, 1]
p = r.pipeline(transaction=False)
for i in range(100):
    p.set(f"py:np:{i}", i)
    p.get(f"py:np:{i}")
res = p.execute()
assert res[1::2] == [str(i).encode() for i in range(100)]
assert r.dbsize() >= 300
assert r.config_get("databases") == {"databases": "1"}

# RESP2 view of the same data through a second client.
r2 = redis.Redis(host="127.0.0.1", port=port, protocol=2)
assert r2.get("py:t1") == b"a"
print("OK")
