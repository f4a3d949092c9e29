"""A sandboxd client in Python 3 stdlib only: ZMTP 3.0 (NULL mechanism, DEALER) over the ipc://
unix socket, the libahp RPC header, and just enough protobuf for proto/sandboxd.proto. Tests use
it to speak the real wire protocol, including frames no well-behaved client would send."""

import os
import select
import socket
import struct
import time

STATUS = {0: "ok", 1: "internal", 2: "bad_request", 3: "not_found", 4: "too_large",
          5: "timeout", 6: "unavailable", 7: "conflict", 8: "permission", 9: "invalid_state",
          10: "unknown_method", 11: "limit", 12: "cancelled", 13: "interrupted",
          14: "permission_denied"}
KILLED_BY = {0: "none", 1: "timeout", 2: "memory", 3: "pids", 4: "cpu"}
KIND_REQUEST, KIND_REPLY, KIND_ERROR = 1, 2, 3


# --- protobuf (encode what we send, decode generically) ---

def varint(v):
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, v):
    return varint(num << 3) + varint(int(v)) if v else b""


def field_bytes(num, b, always=False):
    if isinstance(b, str):
        b = b.encode()
    if not b and not always:
        return b""
    return varint((num << 3) | 2) + varint(len(b)) + b


def parse(buf):
    """Wire bytes -> {field: [values]} (varints as int, length-delimited as bytes)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("bad wire type")
        out.setdefault(num, []).append(v)
    return out


def _read_varint(buf, i):
    v, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def _one(d, num, default=None):
    return d.get(num, [default])[-1]


def _int32(v):
    v = v or 0
    return v - (1 << 64) if v >= 1 << 63 else v


def limits_msg(memory_mb=0, pids_max=0, cpu_seconds=0, timeout_s=0, output_kb=0,
               file_size_mb=0, open_files=0, disk_mb=0, cpus_milli=0):
    return (field_varint(1, memory_mb) + field_varint(2, pids_max) + field_varint(3, cpu_seconds)
            + field_varint(4, timeout_s) + field_varint(5, output_kb)
            + field_varint(6, file_size_mb) + field_varint(7, open_files)
            + field_varint(8, disk_mb) + field_varint(9, cpus_milli))


def req_create(run_id, profile="", limits=None, network=0):
    body = field_bytes(1, run_id) + field_bytes(2, profile)
    if limits is not None:
        body += field_bytes(3, limits_msg(**limits), always=True)
    body += field_varint(4, network)
    return field_bytes(1, body, always=True)


def req_exec(sandbox_id, exec_id, command, timeout_s=0):
    body = (field_bytes(1, sandbox_id) + field_bytes(2, exec_id) + field_bytes(3, command)
            + field_varint(4, timeout_s))
    return field_bytes(2, body, always=True)


def req_fetch(sandbox_id, exec_id):
    return field_bytes(3, field_bytes(1, sandbox_id) + field_bytes(2, exec_id), always=True)


def req_destroy(sandbox_id, keep=False):
    return field_bytes(4, field_bytes(1, sandbox_id) + field_varint(2, keep), always=True)


def req_list():
    return field_bytes(5, b"", always=True)


def req_run(command, profile="", run_id="", limits=None, network=0, timeout_s=0, keep=False):
    """Request{run}: the one-shot, served only on the exec socket."""
    body = field_bytes(1, run_id) + field_bytes(2, profile)
    if limits is not None:
        body += field_bytes(3, limits_msg(**limits), always=True)
    body += (field_varint(4, network) + field_bytes(5, command) + field_varint(6, timeout_s)
             + field_varint(7, keep))
    return field_bytes(6, body, always=True)


def decode_error(buf):
    e = parse(buf)
    return {"status": STATUS.get(_one(e, 1, 0), str(_one(e, 1, 0))),
            "message": _one(e, 2, b"").decode(errors="replace")}


def decode_reply(buf):
    r = parse(buf)
    out = {}
    if 1 in r:
        out["error"] = decode_error(_one(r, 1))
    if 2 in r:
        c = parse(_one(r, 2))
        out["create"] = {"sandbox_id": _one(c, 1, b"").decode(), "existed": bool(_one(c, 2, 0)),
                         "workspace": _one(c, 3, b"").decode()}
    if 3 in r:
        x = parse(_one(r, 3))
        out["exec"] = {
            "exec_id": _one(x, 1, b"").decode(),
            "exit_code": _int32(_one(x, 2, 0)),
            "stdout": _one(x, 3, b""),
            "stderr": _one(x, 4, b""),
            "truncated": bool(_one(x, 5, 0)),
            "cwd": _one(x, 6, b"").decode(errors="replace"),
            "duration_ms": _one(x, 7, 0),
            "killed_by": KILLED_BY.get(_one(x, 8, 0), str(_one(x, 8, 0))),
        }
    if 4 in r:
        out["destroy"] = {}
    if 6 in r:
        x = parse(_one(r, 6))
        out["run"] = {"sandbox_id": _one(x, 2, b"").decode(), "workspace": _one(x, 3, b"").decode(),
                      "stage": _one(x, 4, b"").decode(), "in_fd": bool(_one(x, 5, 0)),
                      "output_kb": _one(x, 6, 0)}
        if 1 in x:
            out["run"]["result"] = decode_reply(varint((3 << 3) | 2) + varint(len(_one(x, 1)))
                                                + _one(x, 1))["exec"]
    if 5 in r:
        lst = parse(_one(r, 5))
        out["list"] = []
        for s in lst.get(1, []):
            d = parse(s)
            out["list"].append({"sandbox_id": _one(d, 1, b"").decode(),
                                "profile": _one(d, 2, b"").decode(),
                                "network": _one(d, 3, 0), "execs": _one(d, 5, 0),
                                "busy": bool(_one(d, 6, 0))})
    return out


# --- the exec socket (SOCK_SEQPACKET: one packet each way) ---

def run_packet(sock_path, packet, timeout=60.0):
    """Sends one raw packet on the exec socket and returns (decoded reply, raw bytes,
    whether a memfd came with it); a reply in a memfd is read from it. (None, b"", False)
    when the daemon closed the connection without a reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.send(packet)
        msg, fds, _, _ = socket.recv_fds(s, 1 << 17, 1)
        if not msg:
            return None, b"", False
        rep = decode_reply(msg)
        if fds:
            with os.fdopen(fds[0], "rb") as f:
                msg = f.read()
            rep = decode_reply(msg)
        return rep, msg, bool(fds)
    finally:
        s.close()


# --- ZMTP 3.0 ---

class ZmtpError(Exception):
    pass


class Client:
    """A DEALER peer of sandboxd's ROUTER socket."""

    def __init__(self, sock_path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(sock_path)
        self.buf = b""
        self.next_id = 1
        greeting = (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
                    + b"\x00" + b"\x00" * 31)
        self.sock.sendall(greeting)
        peer = self._read(64, timeout)
        if peer[0] != 0xFF or peer[9] != 0x7F or peer[10] < 3:
            raise ZmtpError("not a ZMTP 3 peer")
        props = self._prop(b"Socket-Type", b"DEALER") + self._prop(b"Identity", b"")
        self._send_frame(b"\x05READY" + props, command=True)
        flags, body = self._read_frame(timeout)
        if not flags & 4 or not body.startswith(b"\x05READY"):
            raise ZmtpError("no READY from peer")

    @staticmethod
    def _prop(name, value):
        return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _read(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no data from sandboxd")
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("sandboxd closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, body, more=False, command=False):
        flags = (1 if more else 0) | (4 if command else 0)
        if len(body) > 255:
            hdr = bytes([flags | 2]) + struct.pack(">Q", len(body))
        else:
            hdr = bytes([flags, len(body)])
        self.sock.sendall(hdr + body)

    def _read_frame(self, timeout):
        flags = self._read(1, timeout)[0]
        if flags & 2:
            size = struct.unpack(">Q", self._read(8, timeout))[0]
        else:
            size = self._read(1, timeout)[0]
        return flags, self._read(size, timeout)

    def send_frames(self, frames):
        """Sends one multipart message made of raw frames."""
        for i, f in enumerate(frames):
            self._send_frame(f, more=i < len(frames) - 1)

    def recv_message(self, timeout=30.0):
        """Next multipart message (commands such as PING are skipped)."""
        frames = []
        while True:
            flags, body = self._read_frame(timeout)
            if flags & 4:
                continue
            frames.append(body)
            if not flags & 1:
                return frames

    @staticmethod
    def header(kind, rid):
        return b"AHP1" + struct.pack(">I", kind) + struct.pack(">Q", rid)

    def send(self, body):
        rid = self.next_id
        self.next_id += 1
        self.send_frames([self.header(KIND_REQUEST, rid), body])
        return rid

    def recv(self, timeout=30.0):
        """(request_id, reply dict); transport errors come back as {"transport_error": ...}."""
        frames = self.recv_message(timeout)
        if len(frames) != 2 or len(frames[0]) != 16 or frames[0][:4] != b"AHP1":
            raise ZmtpError(f"bad reply frames {frames!r}")
        kind = struct.unpack(">I", frames[0][4:8])[0]
        rid = struct.unpack(">Q", frames[0][8:16])[0]
        if kind == KIND_ERROR:
            te = parse(frames[1])
            return rid, {"transport_error": decode_error(_one(te, 1, b""))}
        return rid, decode_reply(frames[1])

    def call(self, body, timeout=30.0):
        rid = self.send(body)
        deadline = time.monotonic() + timeout
        while True:
            got, rep = self.recv(max(0.01, deadline - time.monotonic()))
            if got == rid:
                return rep

    # conveniences
    def create(self, run_id, timeout=30.0, **kw):
        return self.call(req_create(run_id, **kw), timeout)

    def exec(self, sandbox_id, exec_id, command, timeout_s=0, timeout=120.0):
        return self.call(req_exec(sandbox_id, exec_id, command, timeout_s), timeout)

    def fetch(self, sandbox_id, exec_id, timeout=30.0):
        return self.call(req_fetch(sandbox_id, exec_id), timeout)

    def destroy(self, sandbox_id, keep=False, timeout=30.0):
        return self.call(req_destroy(sandbox_id, keep), timeout)

    def list(self, timeout=30.0):
        return self.call(req_list(), timeout)
