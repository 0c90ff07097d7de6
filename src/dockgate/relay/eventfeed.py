"""Shared event streams: one `GET /events` to the daemon for all the clients that ask the same.

Dashboards, proxies (Traefik) and agents each hold a `GET /events` open, often hundreds of them
through one gateway. Relayed one to one, every event costs the gateway a read from each of their
daemon connections and a write to each client, and the daemon a write to each. Instead, clients
whose request would reach the daemon byte for byte the same (the forwarded target: path, API
version and query, after the policy's rewrites) share one `EventFeed`: one daemon connection,
one read per event, and a write to each client.

What a client sees is what its own stream would show: the daemon's answer head (as it was sent
to the feed's first client: its `Date` is that of the feed's start), then the events the daemon
emits from the moment the client joined, each whole, framed in chunks of the feed's own (chunk
boundaries carry no meaning in HTTP; the events are JSON values each ended by a newline, moby
`json.Encoder`). A client that joins while an event is half read starts with the next one.

Only streams without `since` or `until` are shared (relay/connection.py asks `shareable`): those
replay stored events from a point in time, different for each client. The per-client work stays
per client: each member is an ordinary `ClientConnection` exchange reading the feed as if it
were its own daemon connection (`Subscription` stands in for the `UpstreamConnection`), so its
policy's redaction of events, its access and audit lines, its limits and timeouts are its own.

A member whose client stops reading cannot hold the others back (one daemon connection cannot be
paused for one of them), so what is written to it while its socket stays full is counted: the
events not yet read by all the members of the process together may take `UNREAD_BUDGET_BYTES`;
past that, a member with more than `SLOW_MEMBER_BYTES` of them is cut, logged as such, rather
than buffered without bound. A slow reader alone rides out a burst of big events (another
caller's containers with large labels) as its own stream would: the daemon holds 1,024 events
for a slow subscriber before it drops them (moby pkg/pubsub); the budget is that cushion,
shared. The head a joiner gets is the daemon's with a `Date` of now.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import re
import time
from typing import Protocol
from urllib.parse import unquote_plus

from dockgate.http.chunked import ChunkedDecoder
from dockgate.http.errors import ClientProtocolError, GatewayError, UpstreamError
from dockgate.http.request import RequestHead
from dockgate.http.response import (
    EndOfResponse,
    Framing,
    ResponseHead,
    ResponseReader,
)
from dockgate.relay.upstream import UpstreamConnection, UpstreamOwner, UpstreamPool

# Event bytes written to members while their clients' sockets stay full (past the write
# buffer's high-water mark), all members of the process together: past this budget, a member
# with more than SLOW_MEMBER_BYTES of them is cut. A one-to-one stream holds at most the
# high-water mark (256 KiB) and then pauses its daemon connection; shared streams cost at most
# this much more, whatever the number of members that stop reading.
UNREAD_BUDGET_BYTES = 16 * 1024 * 1024
SLOW_MEMBER_BYTES = 256 * 1024

# Query keys after which a stream replays the past (moby api/server/router/system: since,
# until). Go's url.ParseQuery splits on '&' (and on ';' before Go 1.17) and unescapes keys;
# the comparison here ignores case as well, so that no spelling the daemon might take escapes.
_QUERY_SEPARATORS = re.compile(r"[&;]")
_REPLAY_KEYS = frozenset({"since", "until"})

_LAST_CHUNK = b"0\r\n\r\n"
_DATE_FIELD = re.compile(rb"\r\ndate:[^\r\n]*", re.IGNORECASE)


def shareable(head: RequestHead) -> bool:
    """Whether this (allowed, `SystemEvents`) request's answer may be shared: a plain HTTP/1.1
    GET without a body that asks for events from now on."""
    if head.method != "GET" or head.version != (1, 1) or head.has_body:
        return False
    query = head.target.partition("?")[2]
    if not query:
        return True
    return all(
        unquote_plus(pair.partition("=")[0]).lower() not in _REPLAY_KEYS
        for pair in _QUERY_SEPARATORS.split(query)
    )


class FeedMember(UpstreamOwner, Protocol):
    """What a feed tells a client exchange besides what a daemon connection tells it."""

    def feed_failed(self, exc: GatewayError) -> None:
        """The feed could not reach the daemon, or its answer was unreadable: no byte of an
        answer went to this member yet."""
        ...

    def feed_cut(self, note: str) -> None:
        """The member fell too far behind and is cut (`note` says why, for its log line)."""
        ...


class FeedPhase(enum.Enum):
    CONNECTING = "connecting"  # the daemon connection is being opened
    AWAITING_HEAD = "awaiting head"  # the request went out; the answer head is not whole yet
    STREAMING = "streaming"  # a 200 chunked stream: shared, joinable
    PASSING = "passing"  # an answer that is no stream (an error): relayed as it is, not joinable
    ENDED = "ended"


class Subscription:
    """A member's place in a feed, where its exchange keeps its daemon connection: the relay
    closes, pauses and resumes it as it would an `UpstreamConnection`."""

    __slots__ = ("feed", "owner", "paused", "reused", "unread")

    def __init__(self, feed: EventFeed, owner: FeedMember) -> None:
        self.feed = feed
        self.owner: FeedMember | None = owner
        self.paused = False  # the member's client socket is full (its pause_writing)
        self.unread = 0  # event bytes written to it since
        self.reused = False  # (never a pooled connection: no retry on a fresh one)

    def write(self, data: bytes) -> None:
        """Nothing goes to the daemon from a member: the feed sent the (bodiless) request."""

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self.feed.feeds.unread -= self.unread
        self.unread = 0

    def close(self) -> None:
        """The member's exchange is over (the client left, or the stream ended)."""
        self.feed.leave(self)


class EventFeed:
    """One daemon connection carrying `GET /events` for every member that asks the same."""

    def __init__(self, feeds: EventFeeds, target: str, request: bytes) -> None:
        self.feeds = feeds
        self.target = target
        self.request = request  # the first member's forwarded head
        self.phase = FeedPhase.CONNECTING
        # Members by how far they are, each an insertion-ordered set: joined, but the answer
        # head is not theirs yet; head written, waiting for an event's start; receiving events.
        self.waiting: dict[Subscription, None] = {}
        self.joining: dict[Subscription, None] = {}
        self.members: dict[Subscription, None] = {}
        self.conn: UpstreamConnection | None = None
        self.head = b""  # the daemon's answer head, for whoever joins later
        self._early = b""  # what the daemon sent up to and with its head
        self._reader = ResponseReader("GET")
        self._decoder = ChunkedDecoder()
        # The events relayed so far end with a whole one: a member may start at the next byte.
        self._at_event_start = True
        self._task: asyncio.Task[None] | None = None
        # The head for joiners, with the Date of the second it was made in (_head_now).
        self._head_second = 0
        self._head_of_second = b""

    # ----- members --------------------------------------------------------------------------

    def add(self, owner: FeedMember) -> Subscription:
        sub = Subscription(self, owner)
        self.waiting[sub] = None
        if self.phase is FeedPhase.STREAMING:
            # Not from inside the member's own call (it is still setting up its exchange).
            self.feeds.loop.call_soon(self._welcome, sub)
        return sub

    def leave(self, sub: Subscription) -> None:
        sub.owner = None
        self.feeds.unread -= sub.unread
        sub.unread = 0
        self.waiting.pop(sub, None)
        self.joining.pop(sub, None)
        self.members.pop(sub, None)
        if not (self.waiting or self.joining or self.members):
            self._end()

    def _welcome(self, sub: Subscription) -> None:
        """A member that joined a running stream gets its head now; events from the next one
        that starts."""
        owner = sub.owner
        if owner is None or sub not in self.waiting:
            return  # it left meanwhile
        del self.waiting[sub]
        if self.phase is FeedPhase.ENDED:
            owner.upstream_data(self._head_now() + _LAST_CHUNK)
            return
        owner.upstream_data(self._head_now())
        if sub.owner is not None:
            (self.members if self._at_event_start else self.joining)[sub] = None

    def _head_now(self) -> bytes:
        """The daemon's head with today's `Date`: a joiner is not told since when the stream
        it joins has run (another caller's, maybe)."""
        now = int(time.time())
        if now != self._head_second:
            date = b"\r\nDate: " + email.utils.formatdate(now, usegmt=True).encode()
            self._head_of_second = _DATE_FIELD.sub(lambda _: date, self.head, count=1)
            self._head_second = now
        return self._head_of_second

    # ----- the daemon side ------------------------------------------------------------------

    def start(self) -> None:
        self._task = self.feeds.loop.create_task(self._connect())

    async def _connect(self) -> None:
        pool = self.feeds.pool
        try:
            conn = await pool.connect()
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError) as exc:
            self._task = None
            self._fail(pool.connect_failure(exc))
            return
        self._task = None
        if self.phase is FeedPhase.ENDED:
            conn.close()
            return
        self.conn = conn
        conn.owner = self
        self.phase = FeedPhase.AWAITING_HEAD
        conn.write(self.request)

    def upstream_data(self, data: bytes) -> None:
        phase = self.phase
        if phase is FeedPhase.STREAMING:
            try:
                events = self._decode(data)
            except UpstreamError as exc:
                self.upstream_lost(exc)
                return
            self._relay(events)
        elif phase is FeedPhase.AWAITING_HEAD:
            self._read_head(data)
        elif phase is FeedPhase.PASSING:
            for sub in list(self.members):
                owner = sub.owner
                if owner is not None:
                    owner.upstream_data(data)

    def _read_head(self, data: bytes) -> None:
        self._early += data
        try:
            read = self._reader.feed(data)
        except UpstreamError as exc:
            self._fail(exc)
            return
        if not self._reader.head_done:
            return
        heads = [event for event in read if isinstance(event, ResponseHead)]
        head = heads[0]
        if (
            len(heads) > 1
            or head.status != 200
            or head.framing is not Framing.CHUNKED
            or any(isinstance(event, EndOfResponse) for event in read)
        ):
            # No stream to share (an error answer, say): it goes, as the daemon sent it, to
            # those who asked, each reading it as its own; later requests make a feed of their
            # own.
            self.phase = FeedPhase.PASSING
            self.feeds.forget(self)
            self.members, self.waiting = self.waiting, {}
            early, self._early = self._early, b""
            self.upstream_data(early)
            return
        self.phase = FeedPhase.STREAMING
        self.head = head.raw
        rest = self._early[len(head.raw) :]
        self._early = b""
        # Everyone who joined so far starts at the first event: all members before the first
        # head goes out (one that fails on it must not leave the feed looking empty).
        welcome = list(self.waiting)
        self.members.update(self.waiting)
        self.waiting = {}
        for sub in welcome:
            owner = sub.owner
            if owner is not None:
                owner.upstream_data(self.head)
        try:
            events = self._decode(rest) if rest else b""
        except UpstreamError as exc:
            self.upstream_lost(exc)
            return
        self._relay(events)

    def _decode(self, data: bytes) -> bytes:
        """What the chunks in `data` carry (the strict decoder request bodies are read with,
        http/chunked.py); UpstreamError for broken framing or bytes after the last chunk."""
        try:
            pieces, leftover = self._decoder.feed(data)
        except ClientProtocolError as exc:
            raise UpstreamError(f"the daemon sent invalid chunked framing: {exc.message}") from exc
        if leftover:
            raise UpstreamError("the daemon sent bytes after the end of a chunked response")
        return b"".join(pieces)

    def _relay(self, events: bytes) -> None:
        """Events the daemon sent (a read's worth, or b""), to every member, in one chunk."""
        complete = self._decoder.done
        # Members from this read on that must not get it whole: joiners that start inside it.
        partial = self._start_joining(events) if self.joining and events else []
        chunk = b"%x\r\n%b\r\n" % (len(events), events) if events else b""
        if complete:
            chunk += _LAST_CHUNK
            self.phase = FeedPhase.ENDED
            self.feeds.forget(self)
            # Joiners still waiting for an event's start have their head: the end is theirs.
            partial.extend(self.joining)
            self.members.update(self.joining)
            self.joining.clear()
        if events:
            self._at_event_start = events.endswith(b"\n")
        if chunk:
            if partial:
                skip = set(partial)
                self._write([sub for sub in self.members if sub not in skip], chunk)
            else:
                self._write(list(self.members), chunk)
        if complete and partial:
            self._write(partial, _LAST_CHUNK)

    def _start_joining(self, events: bytes) -> list[Subscription]:
        """Members waiting for an event's start join the members: at once if `events` starts
        one (they get it whole, as everyone), else with what follows the first event that ends
        in `events` (returned: they must not get the read whole). Members before any write, so
        that a member cut meanwhile never leaves the feed looking empty."""
        if self._at_event_start:
            self.members.update(self.joining)
            self.joining.clear()
            return []
        end = events.find(b"\n")
        if end < 0:
            return []  # still inside the same event
        starting = list(self.joining)
        self.joining.clear()
        self.members.update(dict.fromkeys(starting))
        rest = events[end + 1 :]
        if rest:
            self._write(starting, b"%x\r\n%b\r\n" % (len(rest), rest))
        return starting

    def _write(self, subs: list[Subscription], chunk: bytes) -> None:
        size = len(chunk)
        feeds = self.feeds
        for sub in subs:
            owner = sub.owner
            if owner is None:
                continue  # left while an earlier member was written to
            if sub.paused:
                sub.unread += size
                feeds.unread += size
                if sub.unread > SLOW_MEMBER_BYTES and feeds.unread > feeds.unread_budget:
                    sub_unread = sub.unread
                    self.leave(sub)
                    owner.feed_cut(
                        "the client read the shared event stream too slowly "
                        f"({sub_unread // 1024} KiB of events unread, "
                        f"{feeds.unread_budget // 1024 // 1024} MiB for all streams)"
                    )
                    continue
            owner.upstream_data(chunk)

    def upstream_eof(self) -> bool:
        if self.phase is FeedPhase.PASSING:
            for sub in list(self.members):
                owner = sub.owner
                if owner is not None:
                    owner.upstream_eof()
        return False  # the connection closes: upstream_lost tells whoever is left

    def upstream_lost(self, exc: Exception | None = None) -> None:
        """The daemon connection is gone (or broke the protocol): every member's stream ends
        as its own would have (cut, or a 502 for one that has no head yet)."""
        for owner in self._end_for_all():
            owner.upstream_lost(exc)

    def upstream_paused(self) -> None:
        """(The feed writes one request head: nothing to pause.)"""

    def upstream_resumed(self) -> None:
        """(See upstream_paused.)"""

    def _fail(self, exc: GatewayError) -> None:
        """No answer to share: everyone gets the gateway's error."""
        for owner in self._end_for_all():
            owner.feed_failed(exc)

    def _end_for_all(self) -> list[FeedMember]:
        """The feed ends under its members: who they were, each to be told (after, so that
        what they do then finds the feed ended)."""
        everyone = [*self.members, *self.joining, *self.waiting]
        self.members, self.joining, self.waiting = {}, {}, {}
        self._end()
        owners = []
        for sub in everyone:
            self.feeds.unread -= sub.unread
            sub.unread = 0
            owner, sub.owner = sub.owner, None
            if owner is not None:
                owners.append(owner)
        return owners

    def _end(self) -> None:
        """No member left, or the stream is over: the daemon connection goes."""
        self.phase = FeedPhase.ENDED
        self.feeds.forget(self)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class EventFeeds:
    """The process's shared event streams, by forwarded target."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: UpstreamPool,
        unread_budget: int = UNREAD_BUDGET_BYTES,
    ) -> None:
        self.loop = loop
        self.pool = pool
        self._feeds: dict[str, EventFeed] = {}
        # Event bytes written to members whose clients' sockets are full, all feeds together.
        self.unread = 0
        self.unread_budget = unread_budget

    def __len__(self) -> int:
        return len(self._feeds)

    def join(self, head: RequestHead, request: bytes, owner: FeedMember) -> Subscription:
        """`owner`'s place in the feed for `head` (as forwarded: `request`), made if none
        runs yet."""
        feed = self._feeds.get(head.target)
        if feed is None:
            feed = self._feeds[head.target] = EventFeed(self, head.target, request)
            feed.start()
        return feed.add(owner)

    def forget(self, feed: EventFeed) -> None:
        """`feed` takes no one new (it ended, or its answer was no stream)."""
        if self._feeds.get(feed.target) is feed:
            del self._feeds[feed.target]
