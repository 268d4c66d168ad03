#!/usr/bin/env python3
"""Captures shaped to grow the pcap recorder's state rather than its queues (session 8).

    python3 benches/state-captures.py KIND OUT.pcap N

KIND:
  scan    N SYNs to as many ports, never answered (a port scan: N flows, N packet cases)
  heads   N connections each sending 60 KiB of a head that never ends, 1,400 bytes at a time
  mix     150,000-port scan, then N connections x 48 KiB of unfinished head
  ooo     N flows, each with a hole at its start and 3 MB behind it
  udp     N distinct 74-byte UDP datagrams (N packet cases, no flows)
Plain Ethernet pcap, microsecond stamps, 1 us apart. Used by benches/pcap-memory.sh.
"""
import struct
import sys

SYN, ACK, PSH = 2, 16, 8
SERVER = [10, 0, 0, 2]


def pcap(path, frames):
    with open(path, 'wb') as f:
        f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 262144, 1))
        for t, fr in enumerate(frames, 1):
            f.write(struct.pack('<IIII', 1700000000 + t // 1000000, t % 1000000, len(fr), len(fr)))
            f.write(fr)


def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return (~s) & 0xffff


def ip4(src, dst, proto, payload):
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, bytes(src), bytes(dst))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return b'\x02\0\0\0\0\x02' + b'\x02\0\0\0\0\x01' + b'\x08\x00' + ip + payload


def tcp(src, dst, sport, dport, seq, ack, flags, payload=b''):
    return ip4(src, dst, 6, struct.pack('!HHIIBBHHH', sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload)


def client(i):
    return [10, 1 + (i >> 16) % 200, (i >> 8) & 255, i & 255]


def scan(n):
    for i in range(n):
        yield tcp(client(i), SERVER, 40000 + i % 20000, 1 + i % 60000, 1000, 0, SYN)


def heads(n, per, sport=40000):
    seg = 1400
    for i in range(n):
        yield tcp(client(i), SERVER, sport, 80, 999, 0, SYN)
    first = b'GET / HTTP/1.1\r\nHost: x\r\nX-Long: '
    first += b'a' * (seg - len(first))
    for off in range(0, per, seg):
        for i in range(n):
            yield tcp(client(i), SERVER, sport, 80, 1000 + off, 1, ACK | PSH, first if off == 0 else b'a' * seg)


def ooo(n):
    seg = 1400
    for i in range(n):
        yield tcp(client(i), SERVER, 40000, 80, 999, 0, SYN)
    for off in range(seg, 3 << 20, seg):
        for i in range(n):
            yield tcp(client(i), SERVER, 40000, 80, 1000 + off, 0, ACK | PSH, b'c' * seg)


def udp(n):
    for i in range(n):
        payload = struct.pack('!I', i) * 4
        yield ip4(client(i % 5000), SERVER, 17, struct.pack('!HHHH', 5353, 53, 8 + len(payload), 0) + payload)


def mix(n):
    yield from scan(150000)
    yield from heads(n, 48 << 10, sport=41000)


KINDS = {'scan': scan, 'heads': lambda n: heads(n, 60 << 10), 'mix': mix, 'ooo': ooo, 'udp': udp}

if __name__ == '__main__':
    kind, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pcap(out, KINDS[kind](n))
