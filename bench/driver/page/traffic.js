// The user's traffic (--scenario-file) in the page, by the lean driver's rules
// (bench/driver/custom.py): what a connection sends (one of the file's messages by weight,
// from a generator seeded per connection), how its reply is recognised (its ack; a reply
// event carrying the message's "{seq}" id; else the next reply event of that name, in order),
// and every other event counted, never dropped (`unsolicited` if reply-named, else `pushed`).
"use strict";
(function () {
  // mulberry32: a small seeded generator, so a connection's picks repeat from run to run
  function generator(seed) {
    let a = seed >>> 0;
    return function () {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function withSeq(value, id) {
    if (typeof value === "string") return value.split("{seq}").join(id);
    if (Array.isArray(value)) return value.map((v) => withSeq(v, id));
    if (value && typeof value === "object") {
      const out = {};
      for (const key of Object.keys(value)) out[key] = withSeq(value[key], id);
      return out;
    }
    return value;
  }

  function count(table, name) { table[name] = (table[name] || 0) + 1; }

  // traffic: {namespace, auth, query, setup: [{event, args}], messages: [{event, args, reply
  // (null: the ack), seq, weight}], seed} as bench/driver/browser.py sends it.
  function create(traffic) {
    const replies = new Set(traffic.messages.filter((m) => m.reply).map((m) => m.reply));
    const bySeq = new Set(traffic.messages.filter((m) => m.reply && m.seq).map((m) => m.reply));
    const byFifo = new Set(traffic.messages.filter((m) => m.reply && !m.seq).map((m) => m.reply));
    const cumulative = [];
    let total = 0;
    for (const m of traffic.messages) { total += m.weight; cumulative.push(total); }
    const tally = { unsolicited: {}, pushed: {} };
    const conns = new Map();

    // Every event on connection `c` either completes a waiting message (complete(k)) or is
    // counted; counting starts at the socket's creation, so a connect handler's emits count.
    function watch(socket, c, complete) {
      const here = { pick: generator(traffic.seed * 1000003 + c), fifos: {}, waiting: new Map() };
      conns.set(c, here);
      socket.onAny((name, ...args) => {
        if (!replies.has(name)) { count(tally.pushed, name); return; }
        let k;
        if (bySeq.has(name)) {
          for (const found of JSON.stringify(args).matchAll(/seq-(\d+)-(\d+)/g)) {
            const wait = here.waiting.get(found[0]);
            if (Number(found[1]) === c && wait && wait.name === name) {
              k = wait.k;
              here.waiting.delete(found[0]);
              break;
            }
          }
        }
        const fifo = here.fifos[name];
        if (k === undefined && fifo && fifo.length) k = fifo.shift();
        if (k === undefined) count(tally.unsolicited, name);
        else complete(k);
      });
    }

    // Send message k on connection c; done() at its ack (ack replies). Returns the ack id
    // socket.io-client gives it (-1 when a reply event answers it).
    function send(socket, c, k, done) {
      const here = conns.get(c);
      const r = here.pick() * total;
      let choice = cumulative.findIndex((x) => x > r);
      if (choice < 0) choice = cumulative.length - 1;
      const msg = traffic.messages[choice];
      const id = `seq-${c}-${k}`;
      const args = msg.seq ? withSeq(msg.args, id) : msg.args;
      if (!msg.reply) {
        const ackId = socket.ids;
        socket.emit(msg.event, ...args, () => done());
        return ackId;
      }
      if (msg.seq) here.waiting.set(id, { k, name: msg.reply });
      else (here.fifos[msg.reply] = here.fifos[msg.reply] || []).push(k);
      socket.emit(msg.event, ...args);
      return -1;
    }

    // Every [[setup]] event on `socket`, in order, each ack awaited.
    function setup(socket, timeoutMs) {
      return traffic.setup.reduce((before, s) => before.then(() => new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(
          `setup event '${s.event}' on namespace ${traffic.namespace} got no ack within ${timeoutMs / 1000} s`)), timeoutMs);
        socket.emit(s.event, ...s.args, () => { clearTimeout(timer); resolve(); });
      })), Promise.resolve());
    }

    function report() {
      let ambiguous = 0;
      for (const [name, n] of Object.entries(tally.unsolicited)) if (byFifo.has(name)) ambiguous += n;
      return { reply_match: byFifo.size ? "fifo" : bySeq.size ? "seq" : "ack",
               unsolicited: tally.unsolicited, pushed: tally.pushed, ambiguous };
    }

    return { watch, send, setup, report, inOrder: byFifo.size > 0,
             namespace: traffic.namespace,
             connectOptions: { auth: traffic.auth || undefined, query: traffic.query || {} } };
  }

  window.benchTraffic = { create };
})();
