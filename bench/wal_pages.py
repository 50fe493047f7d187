#!/usr/bin/env python3
"""Which B-trees a WAL's frames belong to: the pages each commit wrote, per table or index.

usage: bench/wal_pages.py DB      (DB-wal beside it, e.g. left by kill -9 under load)

Reads the frame headers of DB-wal (page number, and the commit marker), then maps page numbers to
B-tree names through SQLite's dbstat table on a read-only connection (which sees the WAL). Needs
an sqlite3 module with dbstat (Debian's python3 has it).
"""
import collections
import sqlite3
import struct
import sys

WAL_HEADER = 32
FRAME_HEADER = 24


def frames(wal):
    page_size = struct.unpack(">I", wal[8:12])[0]
    offset = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(wal):
        page, commit_size = struct.unpack(">II", wal[offset:offset + 8])
        yield page, commit_size != 0
        offset += FRAME_HEADER + page_size


def main(db):
    with open(db + "-wal", "rb") as file:
        written = list(frames(file.read()))
    commits = max(1, sum(1 for _, commit in written if commit))
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    owner = dict(connection.execute("SELECT pageno, name FROM dbstat"))
    per_tree = collections.Counter(owner.get(page, "(free or unknown)") for page, _ in written)
    print(f"{len(written)} frames, {commits} commits, {len(written) / commits:.1f} pages per commit")
    for name, count in per_tree.most_common():
        print(f"  {name:40} {count:7}  {count / commits:6.1f} per commit")


if __name__ == "__main__":
    main(sys.argv[1])
