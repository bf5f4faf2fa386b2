"""A small RESP2 client on netio's guarded socket: what a poll needs and nothing more.

redis-py costs ~10 MiB of RSS to import and a good share of each poll's CPU in its connection
and parser layers; a poll needs a connect, AUTH, SELECT, a pipeline of commands and their
replies. Replies are parsed by hiredis' C ``Reader``; every byte comes through the
``GuardedSocket``, so the poll's deadline and byte budget hold whatever length a reply declares.
Server error replies come back as ``ServerError`` objects in place of their reply (a pipeline
stays in step); what they mean for a poll is the caller's to judge (``connection.classify``).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import hiredis

from exporter.netio import Guard, GuardedSocket, open_stream

READ_SIZE = 65536  # one recv: an INFO ALL reply (~10-20 KiB) in one go, large replies in few
# hiredis keeps its read buffer (the size of the largest reply, ~16 KiB after INFO ALL) between
# replies unless it is larger than this: ~14 MiB held idle at 1000 targets. Freed, it is
# allocated again at the next poll, which costs nothing measurable.
IDLE_BUFFER = 1024

Arg = str | bytes | int | float
Command = Sequence[Arg]


class ServerError(Exception):
    """An error reply, e.g. ``NOAUTH Authentication required.``: ``text`` is the reply as sent
    (without the leading ``-``), ``command`` the command it answered, once known."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
        self.command = ""

    @property
    def code(self) -> str:
        """The error's first word (``ERR``, ``NOAUTH``, ``WRONGPASS``, ``NOPERM``, ``LOADING``, ...)."""
        return self.text.split(" ", 1)[0].upper()

    @property
    def closes_connection(self) -> bool:
        """Redis sends this one to a client it will not serve, then closes the connection."""
        return self.text.startswith("ERR max number of clients reached")

    def __str__(self) -> str:
        return f"{self.command}: {self.text}" if self.command else self.text


class AuthError(ServerError):
    """AUTH was refused (wrong password or user, or no password set on the server)."""


class ProtocolError(Exception):
    """The bytes received are not RESP."""


def pack(commands: Sequence[Command]) -> bytes:
    """Commands as RESP arrays of bulk strings, ready to send in one write."""
    out: list[bytes] = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Connection:
    """One RESP2 connection, opened by ``connect`` under ``guard`` (the caller re-arms it per poll).

    ``sock`` is None until connected and after ``close``; ``answered`` turns true at the first
    reply read: the server speaks RESP in the clear.
    """

    def __init__(self, address: str | tuple[str, int], guard: Guard, *, username: str | None = None,
                 password: str | None = None, db: int = 0, timeout: float | None = None,
                 tls_context: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        self.address = address
        self.guard = guard
        self.username = username
        self.password = password
        self.db = db
        self.timeout = timeout
        self.tls_context = tls_context
        self.server_name = server_name
        self.sock: GuardedSocket | None = None
        self.answered = False
        self._reader = _new_reader()

    def connect(self) -> None:
        """Open the socket, then AUTH and SELECT in one round trip. Raises ``AuthError`` when AUTH
        is refused, ``ServerError`` when SELECT is, OSError/``ProtocolError`` otherwise."""
        self.sock = open_stream(self.guard, self.address, self.tls_context, self.server_name)
        self.sock.settimeout(self.timeout)  # each read within it, every read within the guard's deadline
        commands: list[Command] = []
        if self.username or self.password:
            auth: tuple[str, ...] = ("AUTH", self.username, self.password or "") if self.username \
                else ("AUTH", self.password or "")
            commands.append(auth)
        if self.db:
            commands.append(("SELECT", self.db))
        if not commands:
            return
        replies = self.execute(commands)
        if self.username and wrong_arity(replies[0]):
            # Redis < 6 knows no users: AUTH takes the password alone.
            replies = self.execute([("AUTH", self.password or "")] + commands[1:])
        for reply in replies:
            if isinstance(reply, ServerError):
                if reply.command == "AUTH":
                    failed = AuthError(reply.text)
                    failed.command = "AUTH"
                    raise failed
                raise reply

    def execute(self, commands: Sequence[Command]) -> list[object]:
        """Send ``commands`` in one write and read one reply per command, a ``ServerError`` in place
        of each error reply."""
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("not connected")
        sock.sendall(pack(commands))
        replies: list[object] = []
        for args in commands:
            reply = self.read()
            if isinstance(reply, ServerError):
                name = args[0]
                reply.command = (name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)).upper()
                if reply.closes_connection:
                    raise reply
            replies.append(reply)
        return replies

    def call(self, *args: Arg) -> object:
        """One command's reply; an error reply is raised as ``ServerError``."""
        (reply,) = self.execute((args,))
        if isinstance(reply, ServerError):
            raise reply
        return reply

    def read(self) -> object:
        """The next reply, read through the guard."""
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("not connected")
        reader = self._reader
        reply = reader.gets()
        while reply is False:  # incomplete (an integer 0 reply is 0, never False)
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionResetError("connection closed by the server")
            reader.feed(data)
            reply = reader.gets()
        self.answered = True
        return reply

    def close(self) -> None:
        sock, self.sock = self.sock, None
        # A new parser too: a half-read reply of the old socket must not prefix the next one's.
        self._reader = _new_reader()
        if sock is not None:
            try:
                sock.close()
            except OSError:  # closing a broken socket must never fail a poll or a reload
                pass


def _new_reader() -> hiredis.Reader:
    reader = hiredis.Reader(protocolError=ProtocolError, replyError=ServerError)
    reader.setmaxbuf(IDLE_BUFFER)
    return reader


def wrong_arity(reply: object) -> bool:
    """An error reply saying the command takes other arguments (AUTH with a user on Redis 5, CONFIG GET
    with several names before 7.0)."""
    return isinstance(reply, ServerError) and "wrong number of arguments" in reply.text.lower()
