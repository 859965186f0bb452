// The reference Socket.IO server (Node socket.io 4) as a --target for the test suite.
//
//   node server.js PORT [PING_INTERVAL_MS]
//
// serves on 127.0.0.1:PORT (or on $HOST, e.g. ::1) and prints "ready PORT" once listening.
// Engine.IO pings every PING_INTERVAL_MS (default 25000, socket.io's own), timeout 20 s.
//
// Namespace "/": the handlers every variant of the harness serves (servers/app.py):
//   echo       acks its argument unchanged (binary too)
//   join       joins the room data.room, acks true
//   broadcast  emits "broadcast" with its argument to data.room, acks true
//   block      waits data.ms (kind "sleep") or burns CPU for it (kind "cpu"), acks true
// plus the shape of Flask-SocketIO's example app: every connection is greeted with
// my_response {data: "Connected", count: 0}; my_event emits my_response {data, count} back;
// my_late_event emits an unprompted my_response at once and the real one 50 ms later (a reply
// name the server also uses for other things, while a message waits); my_once_event answers
// with my_once_reply after 20 ms, and the first time on a socket also once at once, unprompted
// (one surplus reply: matched in order, every later match is shifted by one).
//
// Namespace "/chat": a user's app with auth, query and headers checked at connect
// (auth.token "bench-secret", query client=bench, header x-client: bench, else refused),
// "join" (ack), "send_message" (ack {ok, text}; relays "message" to the rest of the room)
// and "fetch_history" (emits "history" with the argument back).
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const pingInterval = Number(process.argv[3] || 25000);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || !(pingInterval > 0)) {
  console.error("usage: node server.js PORT [PING_INTERVAL_MS]");
  process.exit(2);
}

const httpServer = http.createServer((req, res) => {
  res.writeHead(req.url === "/health" ? 200 : 404);
  res.end(req.url === "/health" ? "ok" : "");
});
const io = new Server(httpServer, { maxHttpBufferSize: 1e7, pingInterval, pingTimeout: 20000 });

function ackOf(args) {
  const last = args[args.length - 1];
  return typeof last === "function" ? last : () => {};
}

io.on("connection", (socket) => {
  let count = 0;
  socket.emit("my_response", { data: "Connected", count: 0 });
  socket.on("echo", (...args) => ackOf(args)(args[0]));
  socket.on("join", (data, ...rest) => {
    socket.join(data.room);
    ackOf(rest)(true);
  });
  socket.on("broadcast", (data, ...rest) => {
    io.to(data.room).emit("broadcast", data);
    ackOf(rest)(true);
  });
  socket.on("block", (data, ...rest) => {
    const ms = Number(data.ms) || 0;
    if (data.kind === "cpu") {
      const end = Date.now() + ms;
      while (Date.now() < end) { /* burn */ }
      ackOf(rest)(true);
    } else {
      setTimeout(() => ackOf(rest)(true), ms);
    }
  });
  socket.on("my_event", (message) => {
    count += 1;
    socket.emit("my_response", { data: message.data, count });
  });
  socket.on("my_late_event", (message) => {
    count += 1;
    socket.emit("my_response", { data: "unprompted", count });
    setTimeout(() => socket.emit("my_response", { data: message.data, count }), 50);
  });
  let once = true;
  socket.on("my_once_event", (message) => {
    if (once) socket.emit("my_once_reply", { data: "unprompted" });
    once = false;
    setTimeout(() => socket.emit("my_once_reply", { data: message.data }), 20);
  });
});

const chat = io.of("/chat");
chat.use((socket, next) => {
  const { auth, query, headers } = socket.handshake;
  if (!auth || auth.token !== "bench-secret") return next(new Error("bad token"));
  if (query.client !== "bench") return next(new Error("query client=bench missing"));
  if (headers["x-client"] !== "bench") return next(new Error("header X-Client missing"));
  next();
});
chat.on("connection", (socket) => {
  socket.on("join", (data, ...rest) => {
    socket.join(data.room);
    ackOf(rest)(true);
  });
  socket.on("send_message", (data, ...rest) => {
    socket.to(data.room).emit("message", data);
    ackOf(rest)({ ok: true, text: data.text });
  });
  socket.on("fetch_history", (data) => socket.emit("history", data));
});

process.on("SIGTERM", () => process.exit(0));
httpServer.listen(port, process.env.HOST || "127.0.0.1", () => console.log(`ready ${port}`));
