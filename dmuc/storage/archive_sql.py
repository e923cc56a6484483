"""The room archive's queries in plain SQL, shared by the SQLite and PostgreSQL adapters:
only the DB-API parameter mark differs (`?` for sqlite3, `%s` for psycopg)."""

from __future__ import annotations

from typing import Any

from dmuc.storage.records import ArchiveIdNotFound, ArchivePage, ArchiveQuery, ArchiveRecord


def _archive_position(txn: Any, room_jid: str, sid: str, mark: str) -> int:
    txn.execute(f"SELECT id FROM archive WHERE room = {mark} AND sid = {mark}", (room_jid, sid))
    row = txn.fetchone()
    if row is None:
        raise ArchiveIdNotFound(f"no message {sid!r} in the archive of {room_jid}")
    return int(row[0])


def select_archive_page(txn: Any, room_jid: str, query: ArchiveQuery,
                        mark: str = "?") -> ArchivePage:
    """A MAM page in one transaction, as Prosody's archive:find with limit max+1: the
    filters (start, end, with, ids) give `count`; `after` walks forward from a message,
    `before` (or `last`) backwards from one (or from the end); at most `max` messages,
    returned oldest first. Plain SQL: any DB-API driver runs it, given its parameter
    mark (`?` for sqlite3, `%s` for psycopg)."""
    where, params = [f"room = {mark}"], [room_jid]
    if query.start is not None:
        where.append(f"stamp >= {mark}")
        params.append(query.start)
    if query.end is not None:
        where.append(f"stamp <= {mark}")
        params.append(query.end)
    if query.nick is not None:
        where.append(f"nick = {mark}")
        params.append(query.nick)
    if query.sender is not None:
        where.append(f"sender = {mark}")
        params.append(query.sender)
    if query.ids is not None:
        if not query.ids:
            return ArchivePage([], 0, True)
        where.append(f"sid IN ({', '.join(mark for _ in query.ids)})")
        params.extend(query.ids)
    filters = " AND ".join(where)
    txn.execute(f"SELECT COUNT(*) FROM archive WHERE {filters}", params)
    count = int(txn.fetchone()[0])
    paging, paging_params = [], []
    if query.after is not None:
        paging.append(f"id > {mark}")
        paging_params.append(_archive_position(txn, room_jid, query.after, mark))
    if query.before is not None:
        paging.append(f"id < {mark}")
        paging_params.append(_archive_position(txn, room_jid, query.before, mark))
    backwards = query.before is not None or query.last
    order = "DESC" if backwards else "ASC"
    txn.execute(
        "SELECT sid, stamp, nick, sender, xml, retracted FROM archive"
        f" WHERE {' AND '.join([filters, *paging])} ORDER BY id {order} LIMIT {mark}",
        [*params, *paging_params, max(query.max, 0) + 1])
    rows = txn.fetchall()
    complete = len(rows) <= query.max
    records = [ArchiveRecord(sid=sid, stamp=stamp, nick=nick, sender=sender, xml=xml,
                             retracted=bool(retracted))
               for sid, stamp, nick, sender, xml, retracted in rows[:max(query.max, 0)]]
    if backwards:
        records.reverse()
    return ArchivePage(records, count, complete)
