"""DATA and BDAT assembly (RFC 5321 §4.1.1.4, §4.5.2; RFC 3030): pure, bounded, CRLF-only.

:class:`DataAssembler` is fed the raw bytes that follow a ``354`` reply (or
BDAT chunks), in whatever pieces the network delivers, and writes the
dot-unstuffed message to a file-like ``sink``.  It works on whole buffers with bytes methods (find,
count, replace) rather than line by line, so large messages cost little
Python work.

Security rules that live here:

* only ``CRLF . CRLF`` ends the data: a bare CR or LF never terminates
  anything, which is what stops SMTP smuggling;
* bare CR or LF is either a reason to reject the message (``"reject"``) or
  turned into CRLF (``"normalize"``); never half-accepted;
* an oversize message or over-long line is noted and answered once after
  end-of-data, and once the message is doomed nothing more is stored, so
  memory is bounded by ``max_size``;
* a sink that fails to store (disk full, file size limit) is noted the same
  way: the rest of the message is still read and thrown away, so its
  content is never taken for commands.
"""

from __future__ import annotations

from typing import IO

TERMINATOR = b"\r\n.\r\n"

# Error codes, answered by the session after end-of-data.
TOO_BIG = "too_big"
LINE_TOO_LONG = "line_too_long"
BARE_EOL = "bare_eol"
WRITE_FAILED = "write_failed"


class DataAssembler:
    """Incremental end-of-data finder and dot-unstuffer.

    For DATA, ``feed(chunk)`` returns None while more data is needed, or the
    bytes that followed the terminator (pipelined commands) once the message
    is complete.  For BDAT, ``add_chunk(chunk)`` takes exact octets (no
    terminator, no dot-stuffing) and ``finish()`` ends the message.  Then
    ``error`` is None or one of :data:`TOO_BIG`, :data:`LINE_TOO_LONG`,
    :data:`BARE_EOL`, :data:`WRITE_FAILED` (then ``write_error`` is the
    OSError), and ``size`` is the number of octets written to ``sink``.
    With ``binary`` (BODY=BINARYMIME) only the size is checked.
    """

    def __init__(self, sink: IO[bytes], *, max_size: int = 0, max_line_length: int = 0,
                 bare_eol: str = "reject", binary: bool = False) -> None:
        self.sink = sink
        self.max_size = max_size
        self.max_line_length = 0 if binary else max_line_length
        self.normalize = bare_eol == "normalize" and not binary
        self.binary = binary
        self._problems: set[str] = set()
        self.write_error: OSError | None = None
        self.size = 0
        self.received = 0
        # Bytes held back because they may start the terminator or a CRLF.
        self._tail = b""
        # What came before ``_tail``: ended with a real CRLF (or is the start
        # of the data), so a terminator may start at ``_tail[0]``...
        self._after_crlf = True
        # ...and, after any normalisation, ended a line (for unstuffing).
        self._at_line_start = True
        # Octets of the current (unfinished) line already passed on.
        self._line_length = 0

    def feed(self, chunk: bytes) -> bytes | None:
        buffer = self._tail + chunk if self._tail else chunk
        self.received += len(chunk)
        if self._after_crlf and buffer[:3] == b".\r\n":
            self._tail = b""
            return buffer[3:]
        end = buffer.find(TERMINATOR)
        if end >= 0:
            self._process(buffer[:end + 2])
            self._tail = b""
            return buffer[end + len(TERMINATOR):]
        # Hold back the last four octets (a terminator may start there) and
        # never split a CR from a following LF.
        cut = max(len(buffer) - 4, 0)
        if cut and buffer[cut - 1:cut] == b"\r":
            cut -= 1
        self._tail = buffer[cut:]
        if cut:
            self._process(buffer[:cut])
        return None

    def add_chunk(self, chunk: bytes) -> None:
        """BDAT (RFC 3030): ``chunk`` is message content as is."""
        buffer = self._tail + chunk if self._tail else chunk
        self.received += len(chunk)
        cut = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        self._tail = buffer[cut:]               # a CR whose LF may come next
        if cut:
            self._process(buffer[:cut], dot_stuffed=False)

    def finish(self) -> None:
        """BDAT LAST: the message ends here."""
        if self._tail:
            self._process(self._tail, dot_stuffed=False)
            self._tail = b""

    def _process(self, piece: bytes, dot_stuffed: bool = True) -> None:
        """Check (and for DATA unstuff) ``piece``, which never ends between CR and LF.

        Every check runs on every piece, so the answer does not depend on how
        the network split the message.
        """
        self._after_crlf = piece.endswith(b"\r\n")
        if TOO_BIG in self._problems:
            return              # the answer is settled (it outranks the others): skip the scans
        if self.normalize:
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        elif not self.binary:
            self._check_bare_eol(piece)
        self._check_line_lengths(piece)         # on the lines as delivered
        if dot_stuffed:
            # RFC 5321 §4.5.2: a line starting with "." loses that first ".".
            if self._at_line_start and piece[:1] == b".":
                piece = piece[1:]
            self._at_line_start = piece.endswith(b"\r\n")
            piece = piece.replace(b"\r\n.", b"\r\n")
        self.size += len(piece)
        if self.max_size and self.size > self.max_size:
            self._problems.add(TOO_BIG)
        if not self._problems:
            try:
                self.sink.write(piece)
            except OSError as error:
                self.write_error = error
                self._problems.add(WRITE_FAILED)

    @property
    def error(self) -> str | None:
        """None, or the one problem to answer, by a fixed priority."""
        for problem in (TOO_BIG, BARE_EOL, LINE_TOO_LONG, WRITE_FAILED):
            if problem in self._problems:
                return problem
        return None

    def _check_line_lengths(self, piece: bytes) -> None:
        limit = self.max_line_length
        if not limit:
            return
        first = piece.find(b"\n")
        if first < 0:
            self._line_length += len(piece)
        else:
            # Lines end at LF; the CR before it counts, as the limit
            # includes CRLF.
            longest = self._line_length + first + 1
            last = piece.rfind(b"\n")
            if last - first > limit:
                longest = max(longest, max(map(len, piece[first + 1:last].split(b"\n"))) + 1)
            self._line_length = len(piece) - last - 1
        # An unfinished line of ``limit`` octets is too long once it ends.
        if self._line_length >= limit or (first >= 0 and longest > limit):
            self._problems.add(LINE_TOO_LONG)

    def _check_bare_eol(self, piece: bytes) -> None:
        crlf = piece.count(b"\r\n")
        if piece.count(b"\r") != crlf or piece.count(b"\n") != crlf:
            self._problems.add(BARE_EOL)
