#!/usr/bin/env python3
"""Recording TCP proxy: forwards 127.0.0.1:<listen> to the broker and keeps what each client
sent (from its protocol header on) in OUT_DIR/<prefix>-<n>.bin.

    proxy.py BROKER_PORT OUT_DIR PORT_FILE

Prints nothing; writes the port it listens on to PORT_FILE. The client prefix is read, per
connection, from OUT_DIR/.prefix (so one proxy serves several client sessions in turn).
"""
import asyncio
import os
import sys

BROKER_PORT, OUT_DIR, PORT_FILE = int(sys.argv[1]), sys.argv[2], sys.argv[3]
counter = 0


async def pump(reader, writer, sink=None):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if sink is not None:
                sink.write(data)
                sink.flush()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_reader, client_writer):
    global counter
    counter += 1
    try:
        with open(os.path.join(OUT_DIR, ".prefix")) as f:
            prefix = f.read().strip()
    except FileNotFoundError:
        prefix = "client"
    path = os.path.join(OUT_DIR, f"{prefix}-{counter}.bin")
    broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", BROKER_PORT)
    with open(path, "wb") as sink:
        await asyncio.gather(
            pump(client_reader, broker_writer, sink),
            pump(broker_reader, client_writer),
        )


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with open(PORT_FILE + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(PORT_FILE + ".tmp", PORT_FILE)
    async with server:
        await server.serve_forever()


asyncio.run(main())
