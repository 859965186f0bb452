"""Reference echo server for calibration: picows + uvloop speaking just enough Engine.IO 4 /
Socket.IO 5 to answer ``echo``. Not Flask, on purpose: it bounds what the driver can measure.

``python -m bench.driver.refserver PORT [SERVICE_US]`` serves on 127.0.0.1:PORT until
SIGTERM. With SERVICE_US, every echo first burns that many µs of CPU, one at a time: a server
whose true capacity is known (1 / service time), against which the harness's overload numbers
are checked.
"""
import asyncio
import signal
import sys
import time

SERVICE_NS = 0

from picows import WSListener, WSMsgType, ws_create_server

OPEN = (b'0{"sid":"ref","upgrades":[],"pingInterval":25000,"pingTimeout":20000,'
        b'"maxPayload":1000000}')


class EchoSocketIO(WSListener):
    def on_ws_connected(self, transport):
        transport.send(WSMsgType.TEXT, OPEN)

    def on_ws_frame(self, transport, frame):
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()
            return
        data = frame.get_payload_as_bytes()
        if data.startswith(b"42"):
            if SERVICE_NS:
                until = time.perf_counter_ns() + SERVICE_NS
                while time.perf_counter_ns() < until:
                    pass
            # 42<id>["echo",ARG] -> 43<id>[ARG]
            bracket = data.index(b"[", 2)
            comma = data.index(b",", bracket)
            transport.send(WSMsgType.TEXT, b"43" + data[2:bracket] + b"[" + data[comma + 1:])
        elif data == b"40":
            transport.send(WSMsgType.TEXT, b'40{"sid":"ref"}')
        elif data.startswith(b"41"):
            transport.disconnect()


async def serve(port):
    server = await ws_create_server(lambda request: EchoSocketIO(), "127.0.0.1", port)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    print(f"refserver: listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await stop


if __name__ == "__main__":
    import uvloop

    SERVICE_NS = int(float(sys.argv[2]) * 1000) if len(sys.argv) > 2 else 0
    uvloop.run(serve(int(sys.argv[1])))
