#!/usr/bin/env python3
"""Samples per source line of a loaded BPF program, from a perf profile.

perf has no line info for JIT'd BPF code here (bpftool is built without
libbfd), but the kernel keeps it: bpf_prog_info's line_info (the xlated
instruction of each source line) and jited_line_info (that line's address
in the JIT image). This maps every sampled address to the source line that
`bpftool prog dump xlated linum` prints for it.

    # while the program runs (e.g. `lb-bench pktgen --only lbd-dr --seconds 9`):
    perf record -C 0 -o /tmp/p.data -- sleep 3
    perf script -i /tmp/p.data -F ip,sym | awk '/bpf_prog/ {print $1, $2}' \\
        | sort | uniq -c > /tmp/ips.txt
    bench/tools/jit-lines.py $(bpftool prog show name balancer | cut -d: -f1) /tmp/ips.txt

Samples of the program's subprograms (they have line info of their own in
the same records) are counted too. Needs root (BPF_PROG_GET_FD_BY_ID).
"""
import collections
import ctypes
import os
import re
import struct
import subprocess
import sys

SYS_BPF = 321  # x86-64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return r


def prog_info(fd, info):
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, len(info), ctypes.addressof(info)))


def line_addresses(prog_id):
    """(JIT address, xlated instruction) of each line_info record, and the
    (start, end) of the program's JIT'd functions."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<III", prog_id, 0, 0))
    info = ctypes.create_string_buffer(256)
    prog_info(fd, info)
    # struct bpf_prog_info offsets (uapi/linux/bpf.h).
    n_funcs, _ = struct.unpack_from("<II", info, 104)
    (n_lines,) = struct.unpack_from("<I", info, 148)
    (n_jited,) = struct.unpack_from("<I", info, 168)
    line_size, jited_size = struct.unpack_from("<II", info, 172)
    starts = (ctypes.c_uint64 * n_funcs)()
    lens = (ctypes.c_uint32 * n_funcs)()
    lines = ctypes.create_string_buffer(n_lines * line_size)
    jited = ctypes.create_string_buffer(n_jited * jited_size)
    info = ctypes.create_string_buffer(256)
    struct.pack_into("<II", info, 104, n_funcs, n_funcs)
    struct.pack_into("<QQ", info, 112, ctypes.addressof(starts), ctypes.addressof(lens))
    struct.pack_into("<I", info, 148, n_lines)
    struct.pack_into("<Q", info, 152, ctypes.addressof(lines))
    struct.pack_into("<Q", info, 160, ctypes.addressof(jited))
    struct.pack_into("<I", info, 168, n_jited)
    struct.pack_into("<II", info, 172, line_size, jited_size)
    prog_info(fd, info)
    insns = [struct.unpack_from("<I", lines, k * line_size)[0] for k in range(n_lines)]
    addrs = [struct.unpack_from("<Q", jited, k * jited_size)[0] for k in range(n_jited)]
    funcs = [(starts[k], starts[k] + lens[k]) for k in range(n_funcs)]
    return sorted(zip(addrs, insns)), funcs


def source_lines(prog_id):
    """Xlated instruction → the source line bpftool prints above it."""
    out = subprocess.run(
        ["bpftool", "prog", "dump", "xlated", "id", str(prog_id), "linum"],
        capture_output=True, text=True, check=True,
    ).stdout
    src, current = {}, None
    for line in out.splitlines():
        if m := re.match(r"\s*;\s*(.*)", line):
            current = m.group(1)
        elif (m := re.match(r"\s*(\d+):", line)) and current is not None:
            src[int(m.group(1))] = current
    return src


def main():
    prog_id, ips = int(sys.argv[1]), sys.argv[2]
    table, funcs = line_addresses(prog_id)
    src = source_lines(prog_id)
    per_line = collections.Counter()
    total = 0
    for row in open(ips):
        count, addr = row.split()[:2]
        addr, count = int(addr, 16), int(count)
        if not any(start <= addr < end for start, end in funcs):
            continue  # another program's sample
        # The last line record at or before the address.
        lo, hi = 0, len(table)
        while lo < hi:
            mid = (lo + hi) // 2
            if table[mid][0] <= addr:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            continue
        per_line[src.get(table[lo - 1][1], "?")] += count
        total += count
    print(f"{total} samples in program {prog_id}")
    for text, count in per_line.most_common(int(os.environ.get("TOP", "40"))):
        print(f"{count:6d} {100 * count / total:5.1f}%  {text[:160]}")


if __name__ == "__main__":
    main()
