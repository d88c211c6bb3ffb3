#!/usr/bin/env python3
"""Recompute an orcd seal with nothing but the Python standard library.

usage: seal-ref.py MODEL.gguf [KEY_FILE SEAL_FILE]

Prints the model digest, the tensor table hash and the chunk count (the
layout in doc/seal.md).  With a key file and a seal file it also checks the
seal's signature and compares every field, as `orcd verify` does.
"""
import hashlib, hmac, json, struct, sys

CHUNK, BLOCK = 1048576, 4096
# ggml type id: (elements per block, bytes per block)
TYPES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22),
         7: (32, 24), 8: (32, 34), 12: (256, 144), 13: (256, 176), 14: (256, 210)}


def H(b):
    return hashlib.sha256(b).digest()


def root(nodes):
    """Merkle root: parent = SHA256(0x01 || left || right), odd last node carried up."""
    while len(nodes) > 1:
        nxt = [H(b"\x01" + nodes[i] + nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    return nodes[0]


def chunk_digest(data):
    return root([H(b"\x00" + data[i:i + BLOCK]) for i in range(0, len(data), BLOCK)])


def read_gguf(buf):
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal pos
        n = take("Q")
        s = buf[pos:pos + n]
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(scalar[t])

    assert buf[:4] == b"GGUF", "not a GGUF file"
    pos = 4
    version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    alignment = 32
    for _ in range(n_kv):
        key, t = string(), take("I")
        v = value(t)
        if key == b"general.alignment":
            alignment = v
    tensors = []
    for _ in range(n_tensors):
        name, nd = string(), take("I")
        dims = [take("Q") for _ in range(nd)]
        typ, off = take("I"), take("Q")
        n = 1
        for d in dims:
            n *= d
        be, bb = TYPES[typ]
        tensors.append((name, dims, typ, off, n // be * bb))
    data_offset = (pos + alignment - 1) // alignment * alignment
    return data_offset, tensors


def main():
    buf = open(sys.argv[1], "rb").read()
    data_offset, tensors = read_gguf(buf)
    chunks, table = [], hashlib.sha256()
    for name, dims, typ, off, nbytes in tensors:
        start = data_offset + off
        for c in range(start, start + nbytes, CHUNK):
            chunks.append(chunk_digest(buf[c:min(c + CHUNK, start + nbytes)]))
        table.update(struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims)))
        table.update(b"".join(struct.pack("<Q", d) for d in dims))
        table.update(struct.pack("<IQQ", typ, start, nbytes))
    digest = root(chunks)
    print("digest", digest.hex())
    print("tensor_table", table.hexdigest())
    print("file_size", len(buf))
    print("n_chunks", len(chunks))
    if len(sys.argv) < 4:
        return 0
    ikm = open(sys.argv[2], "rb").read()
    if ikm.endswith(b"\r\n"):
        ikm = ikm[:-2]
    elif ikm.endswith(b"\n"):
        ikm = ikm[:-1]
    prk = hmac.new(b"orcd-seal-v1", ikm, hashlib.sha256).digest()          # HKDF extract
    key = hmac.new(prk, b"orcd seal signing key" + b"\x01", hashlib.sha256).digest()  # expand
    s = json.load(open(sys.argv[3]))
    msg = ("orcd-seal-v1\ndigest=%s\nfile_size=%d\ntensor_table=%s\nshard_id=%s\n"
           "created=%s\nchunk_bytes=1048576\nblock_bytes=4096\n" % (
               s["digest"], s["file_size"], s["tensor_table"], s["shard_id"], s["created"]))
    ok = hmac.compare_digest(hmac.new(key, msg.encode(), hashlib.sha256).hexdigest(), s["signature"])
    print("signature", "ok" if ok else "BAD")
    same = (s["digest"] == digest.hex() and s["tensor_table"] == table.hexdigest() and
            s["file_size"] == len(buf) and s["chunks"] == [c.hex() for c in chunks])
    print("model", "matches" if same else "DIFFERS")
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
