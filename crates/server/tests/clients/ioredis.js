// ioredis against Escabelo: node ioredis.js PORT. Prints OK on success.
const Redis = require("ioredis");
const port = Number(process.argv[2]);

function assert(cond, msg) {
  if (!cond) throw new Error("assertion failed: " + msg);
}

(async () => {
  const r = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1, connectionName: "js" });
  assert((await r.ping()) === "PONG", "ping");
  assert((await r.set("js:a", "1")) === "OK", "set");
  assert((await r.get("js:a")) === "1", "get");
  assert((await r.get("js:none")) === null, "null");
  await r.mset("js:b", "2", "js:c", "3");
  const m = await r.mget("js:a", "js:b", "js:c", "js:none");
  assert(JSON.stringify(m) === JSON.stringify(["1", "2", "3", null]), "mget " + m);
  const tx = await r.multi().set("js:t", "x").get("js:t").exec();
  assert(JSON.stringify(tx) === JSON.stringify([[null, "OK"], [null, "x"]]), "multi " + JSON.stringify(tx));
  const keys = await r.keys("js:*");
  assert(keys.length === 4, "keys " + keys);
  let found = [];
  await new Promise((resolve, reject) => {
    const s = r.scanStream({ match: "js:*", count: 2 });
    s.on("data", (ks) => { found = found.concat(ks); });
    s.on("end", resolve);
    s.on("error", reject);
  });
  assert(new Set(found).size === 4, "scanStream " + found);
  assert((await r.del("js:a", "js:b")) === 2, "del");
  const info = await r.info();
  assert(info.includes("redis_version:"), "info");
  await r.quit();
  console.log("OK");
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
