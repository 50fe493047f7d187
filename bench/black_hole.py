"""A destination that accepts connections and never answers: every attempt to it runs into
FORWARD_TIMEOUT_MS. Used to show that a slow destination does not slow ingest.

usage: python3 bench/black_hole.py PORT
"""
import asyncio
import sys


async def hold(reader, writer):
    # Read and drop whatever comes, never write; the client gives up at its timeout.
    while await reader.read(65536):
        pass
    writer.close()


async def main(port):
    server = await asyncio.start_server(hold, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
