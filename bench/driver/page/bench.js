// The browser client's page: socket.io-client connections, the step's schedule on
// performance.now(), and what the page saw of each message (bench/driver/browser.py drives it).
//
// Times are page milliseconds (performance.now(), 5 µs resolution when the page is
// cross-origin isolated); the driver maps them onto CLOCK_MONOTONIC. Per message: intended
// send time, actual emit, ack callback (the reply parsed by the client library), and the next
// animation frame after the reply was written into the DOM (what the user can see). Clicks
// the driver dispatches through the DevTools protocol are interactions: each emits and paints
// its reply, and the Event Timing entries they produce give INP.
"use strict";
(function () {
  const EVENT_TIMING_THRESHOLD_MS = 16;  // the smallest durationThreshold Event Timing allows
  const CLICKS = 1000000;  // the clicks' connection in "{seq}" ids: never a measured one
  const state = {
    sockets: [], upgradeMs: [], clicker: null, sender: null, transports: null,
    traffic: null, clickTraffic: null, onReply: () => {}, onClick: () => {},
    eventEntries: [], interactions: [], observer: null, plan: null,
  };

  // A new socket.io-client connection: on the user's namespace with their auth and query
  // when their traffic runs (state.traffic), else the harness's default namespace.
  function openSocket(transports, index) {
    const user = state.traffic ? state.traffic.connectOptions : { query: {} };
    const opts = { forceNew: true, reconnection: false, timeout: 10000, auth: user.auth,
                   query: Object.assign({}, user.query, { bench_conn: String(index) }) };
    if (transports) opts.transports = transports;
    return state.traffic ? io(state.traffic.namespace, opts) : io(opts);
  }

  function opened(socket, name, timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} not connected after ${timeoutMs} ms`)), timeoutMs);
      socket.on("connect", () => { clearTimeout(timer); resolve(); });
      socket.on("connect_error", (err) => { clearTimeout(timer); reject(new Error(`${name} refused: ${err.message}${err.description ? " (" + err.description + ")" : ""}`)); });
    });
  }

  // Open `count` measured connections and one more for the clicks (socket.io-client defaults
  // unless `transports` names some); resolves once every one is connected (and has sent the
  // user's [[setup]] events, when `traffic` is theirs), rejects with the refusal of the
  // lowest-numbered connection that failed.
  function connect(count, transports, timeoutMs, traffic) {
    const started = performance.now();
    state.transports = transports;
    if (traffic) {
      state.traffic = window.benchTraffic.create(traffic);
      state.clickTraffic = window.benchTraffic.create(traffic);
    }
    const all = [];
    for (let i = 0; i < count; i++) {
      const socket = openSocket(transports, i);
      if (state.traffic) state.traffic.watch(socket, i, (k) => state.onReply(k));
      state.sockets.push(socket);
      state.upgradeMs.push(null);
      socket.io.on("open", () => {
        socket.io.engine.on("upgrade", () => { state.upgradeMs[i] = performance.now() - started; });
      });
      all.push(opened(socket, `connection ${i}`, timeoutMs));
    }
    state.clicker = openSocket(transports, "clicks");
    if (state.clickTraffic) state.clickTraffic.watch(state.clicker, CLICKS, (k) => state.onClick(k));
    all.push(opened(state.clicker, "the clicks' connection", timeoutMs));
    // every attempt settles (each has its timeout); the first failure in connection order
    // is the one reported, whichever happened to fail first
    return Promise.allSettled(all).then((results) => {
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
      if (!state.traffic) return null;
      return Promise.all([...state.sockets.map((s) => state.traffic.setup(s, timeoutMs)),
                          state.clickTraffic.setup(state.clicker, timeoutMs)]);
    }).then(transportsNow);
  }

  function transportsNow() {
    return state.sockets.map((s) => (s.io.engine && s.io.engine.transport ? s.io.engine.transport.name : ""));
  }

  // The lean client's bodies: {"p": "xx…"} of `nbytes` JSON bytes, or one binary attachment.
  function body(nbytes, binary) {
    if (binary) return new Uint8Array(Math.max(1, nbytes)).fill(0xa5).buffer;
    return { p: "x".repeat(Math.max(0, nbytes - 8)) };
  }

  // Stamp every message whose reply was written since the last frame with the next frame's time.
  function painter(painted) {
    let waiting = [];
    return function written(k) {
      waiting.push(k);
      if (waiting.length > 1) return;
      requestAnimationFrame(() => {
        const now = performance.now();
        for (const j of waiting) painted[j] = now;
        waiting = [];
      });
    };
  }

  // Call fire(i, intended) for each of plan.offsets (page ms from plan.t0) at its time: every
  // call due by now is made, then the page yields to the event loop (setTimeout for waits over
  // 2 ms, which Chromium may deliver ~1 ms late; a MessageChannel turn for the last stretch,
  // which never sleeps through a due time). Nothing fires before t0. Returns {done()}.
  function atScheduledTimes(plan, fire) {
    const channel = new MessageChannel();
    let i = 0;
    function pump() {
      const now = performance.now();
      while (i < plan.offsets.length && plan.t0 + plan.offsets[i] <= now) {
        fire(i, plan.t0 + plan.offsets[i]);
        i++;
      }
      if (i >= plan.offsets.length) return;
      const wait = plan.t0 + plan.offsets[i] - performance.now();
      if (wait > 2) setTimeout(pump, wait - 1.5);
      else channel.port1.postMessage(0);
    }
    function start() {
      if (performance.now() < plan.t0) { channel.port1.postMessage(0); return; }
      channel.port2.onmessage = pump;
      pump();
    }
    channel.port2.onmessage = start;
    setTimeout(start, Math.max(0, plan.t0 - performance.now() - 1.5));
    return { done: () => i >= plan.offsets.length };
  }

  // New connections at the schedule's times: each attempt is a message whose Engine.IO open
  // (`opened`) and Socket.IO connect (`received`) are stamped, and which is closed once
  // connected. A refusal after the open failed at connect (stage 4), before it at open (3);
  // an attempt with neither by the deadline is left unanswered (a timeout).
  function runConnects(plan) {
    const n = plan.offsets.length;
    const m = { intended: new Float64Array(n), sent: new Float64Array(n),
                received: new Float64Array(n), opened: new Float64Array(n),
                failedStage: new Int8Array(n), used: 0 };
    let settled = 0;
    const connectedOn = [];  // the transport each connected attempt was on when it connected
    let finish;
    const finished = new Promise((resolve) => { finish = resolve; });
    const pumped = atScheduledTimes(plan, (k, intended) => {
      m.used = k + 1;
      m.intended[k] = intended;
      m.sent[k] = performance.now();
      const socket = openSocket(state.transports, `attempt-${k}`);
      let over = false;
      const settle = () => {  // the attempt's first ending counts, once
        if (over) return false;
        over = true; clearTimeout(timer); settled++; socket.disconnect();
        return true;
      };
      const timer = setTimeout(settle, plan.deadlineMs);
      socket.io.on("open", () => { if (!m.opened[k]) m.opened[k] = performance.now(); });
      socket.on("connect", () => {
        const now = performance.now();
        const on = socket.io.engine && socket.io.engine.transport ? socket.io.engine.transport.name : "";
        if (settle()) { m.received[k] = now; connectedOn.push(on); }
      });
      socket.on("connect_error", () => {
        const stage = m.opened[k] ? 4 : 3;
        if (settle()) m.failedStage[k] = stage;
      });
    });
    const end = plan.t0 + plan.windowMs;
    (function check() {
      const now = performance.now();
      if ((pumped.done() && settled >= m.used && now >= end) || now >= end + plan.deadlineMs) {
        finish();
      } else setTimeout(check, 20);
    })();
    return finished.then(() => Object.assign(
      used(m, ["intended", "sent", "received", "opened", "failedStage"]),
      { transports: connectedOn, upgradeMs: [] }));
  }

  // Fan-out: every measured connection joins `room` (each join acked) and one more
  // connection, the sender's, is opened; resolves once all have, before the clock starts.
  function join(room, timeoutMs) {
    state.sender = openSocket(state.transports, "sender");
    const joined = state.sockets.map((socket, i) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`member ${i} did not join ${room} in ${timeoutMs} ms`)), timeoutMs);
      socket.emit("join", { room }, () => { clearTimeout(timer); resolve(); });
    }));
    return Promise.all([opened(state.sender, "the sender's connection", timeoutMs), ...joined]);
  }

  // The sender emits `broadcast` {room, id, p} at the schedule's times; every member stamps
  // each broadcast it receives (by id) and writes it into the DOM. Deliveries are
  // trigger-major: delivery t * members + slot is broadcast t at member slot.
  function runFanout(plan) {
    const width = state.sockets.length;
    const n = plan.offsets.length;
    const m = { intended: new Float64Array(n), sent: new Float64Array(n),
                received: new Float64Array(n * width) };
    const out = document.getElementById("reply");
    const pad = "x".repeat(Math.max(0, plan.payload - 40));
    let got = 0;
    let finish;
    const finished = new Promise((resolve) => { finish = resolve; });
    state.sockets.forEach((socket, slot) => socket.on("broadcast", (data) => {
      const t = data ? data.id : -1;
      if (Number.isInteger(t) && t >= 0 && t < n && !m.received[t * width + slot]) {
        m.received[t * width + slot] = performance.now();
        got++;
        out.textContent = `broadcast ${t}`;
      }
    }));
    const pumped = atScheduledTimes(plan, (t, intended) => {
      m.intended[t] = intended;
      m.sent[t] = performance.now();
      state.sender.emit("broadcast", { room: plan.room, id: t, p: pad });
    });
    const end = plan.t0 + plan.windowMs;
    (function check() {
      const now = performance.now();
      if ((pumped.done() && got >= n * width && now >= end) || now >= end + plan.deadlineMs) {
        finish();
      } else setTimeout(check, 20);
    })();
    return finished.then(() => ({
      used: n, width,
      intended: Array.from(m.intended), sent: Array.from(m.sent),
      received: Array.from(m.received),
      alive: state.sockets.map((s) => s.connected),
      transports: transportsNow(),
      upgradeMs: state.upgradeMs,
    }));
  }

  // {used, name: the first `used` values of m[name] as a plain array, ...} for the driver.
  function used(m, names) {
    const out = { used: m.used };
    for (const name of names) out[name] = Array.from(m[name].subarray(0, m.used));
    return out;
  }

  // Load the step before its start time is known (the schedule may be large).
  function load(plan) { state.plan = plan; return plan.offsets.length; }

  // Run the loaded step from page time t0: {kind: "open"|"closed"|"connect", windowMs, offsets (from
  // t0), conns, event, payload, binary, capacity, deadlineMs}; resolves with the per-message
  // arrays once every message has its reply or the deadline has passed after the window.
  function run(t0) {
    const plan = Object.assign({}, state.plan, { t0 });
    if (plan.kind === "connect") return runConnects(plan);
    if (plan.kind === "fanout") return runFanout(plan);
    const cap = plan.kind === "open" ? plan.offsets.length : plan.capacity;
    const m = {
      conn: new Int32Array(cap), intended: new Float64Array(cap), sent: new Float64Array(cap),
      received: new Float64Array(cap), painted: new Float64Array(cap), ackId: new Int32Array(cap).fill(-1),
      lost: new Uint8Array(cap), used: 0,
    };
    const out = document.getElementById("reply");
    const written = painter(m.painted);
    const data = body(plan.payload, plan.binary);
    const end = plan.t0 + plan.windowMs;
    let outstanding = 0;
    let finish;
    const finished = new Promise((resolve) => { finish = resolve; });

    function acked(k) {
      if (k >= m.used || m.received[k]) return;
      m.received[k] = performance.now();
      outstanding--;
      out.textContent = `reply ${k}`;
      written(k);
      if (plan.kind === "closed") next(m.conn[k]);
    }

    function emit(k, c, intended) {
      const socket = state.sockets[c];
      m.conn[k] = c;
      m.intended[k] = intended;
      m.sent[k] = performance.now();
      if (!socket.connected) { m.lost[k] = 1; return; }
      outstanding++;
      if (state.traffic) { m.ackId[k] = state.traffic.send(socket, c, k, () => acked(k)); return; }
      m.ackId[k] = socket.ids;
      socket.emit(plan.event, data, () => acked(k));
    }

    function next(c) {
      const now = performance.now();
      if (now >= end || m.used >= cap) return;
      const k = m.used++;
      emit(k, c, now);
    }

    const pumped = plan.kind === "open"
      ? atScheduledTimes(plan, (i, intended) => emit(m.used++, plan.conns[i], intended))
      : atScheduledTimes(Object.assign({}, plan, { offsets: [0] }), () => {
        for (let c = 0; c < state.sockets.length; c++) next(c);
      });

    state.onReply = acked;
    // Done at the window's end plus the deadline, or earlier once nothing is outstanding;
    // replies matched in order stay connected a while longer (three times the slowest reply,
    // 250 ms to the deadline), so a reply in surplus still arrives and is counted.
    const settleMs = plan.deadlineMs;
    let quietUntil = null;
    (function check() {
      const now = performance.now();
      const due = pumped.done() && now >= end;
      if (due && outstanding <= 0 && quietUntil === null) {
        let slowest = 0;
        for (let k = 0; k < m.used; k++) if (m.received[k]) slowest = Math.max(slowest, m.received[k] - m.intended[k]);
        quietUntil = now + (state.traffic && state.traffic.inOrder ? Math.min(settleMs, Math.max(250, 3 * slowest)) : 0);
      }
      if ((quietUntil !== null && now >= quietUntil) || now >= end + settleMs) {
        requestAnimationFrame(() => requestAnimationFrame(() => finish()));  // last paints
      } else setTimeout(check, 20);
    })();

    return finished.then(() => Object.assign(used(
      m, ["conn", "intended", "sent", "received", "painted", "ackId", "lost"]), {
      alive: state.sockets.map((s) => s.connected),
      transports: transportsNow(),
      upgradeMs: state.upgradeMs,
      replies: state.traffic ? state.traffic.report() : null,
    }));
  }

  // Interactions: a click on the button emits on the clicks' own connection (never one of the
  // measured ones) and paints its reply.
  function interactive(event, nbytes) {
    const button = document.getElementById("act");
    const shown = document.getElementById("answer");
    const data = body(nbytes, false);
    function answered(record) {
      if (!record || record.acked) return;
      record.acked = performance.now();
      shown.textContent = `answer ${state.interactions.length}`;
      requestAnimationFrame(() => { record.painted = performance.now(); });
    }
    state.onClick = (k) => answered(state.interactions[k]);
    button.addEventListener("click", (ev) => {
      const record = { at: ev.timeStamp, acked: 0, painted: 0 };
      const k = state.interactions.push(record) - 1;
      const socket = state.clicker;
      if (!socket || !socket.connected) return;
      // the user's traffic: the click sends one of their messages, answered by its reply
      if (state.clickTraffic) state.clickTraffic.send(socket, CLICKS, k, () => answered(record));
      else socket.emit(event, data, () => answered(record));
    });
    state.observer = new PerformanceObserver((list) => keep(list.getEntries()));
    state.observer.observe({ type: "event", durationThreshold: EVENT_TIMING_THRESHOLD_MS, buffered: true });
  }

  function keep(entries) {
    for (const e of entries) {
      if (e.interactionId) state.eventEntries.push({ id: e.interactionId, name: e.name, start: e.startTime, duration: e.duration });
    }
  }

  function clicksAnswered() {
    return state.interactions.every((i) => i.painted > 0);
  }

  function interactionReport() {
    if (state.observer) keep(state.observer.takeRecords());
    return {
      interactions: state.interactions,
      entries: state.eventEntries,
      interactionCount: performance.interactionCount || 0,
      threshold: EVENT_TIMING_THRESHOLD_MS,
    };
  }

  function close() {
    for (const s of state.sockets) s.disconnect();
    if (state.clicker) state.clicker.disconnect();
    if (state.sender) state.sender.disconnect();
  }

  window.bench = { connect, join, load, run, interactive, clicksAnswered, interactionReport, close,
                   isolated: () => self.crossOriginIsolated };
})();
