#!/bin/bash
# Captures the adverts of a real keepalived (Debian's keepalived 2.2.7) for
# the golden-bytes tests in lb-userspace/src/vrrp/packet.rs.
#
# Runs as root, entirely inside a throwaway network namespace: a bridge br0
# with one veth port (so the bridge is up), keepalived running its three
# instances (v2 + PASS auth, v3 IPv4 at 50 cs, v3 IPv6) as sole routers,
# tcpdump on br0. keepalived is stopped with SIGTERM, so the capture also
# holds its priority-0 adverts. Each advert's IP packet (from the IP header
# on, link layer stripped) is written as one hex line to
# keepalived-<instance>.hex ("# " lines are comments).
#
# Usage: lb-userspace/testdata/vrrp/capture.sh   (writes next to itself)
set -euo pipefail
OUT=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
NS=lbtcap$$
ip netns add "$NS"
cleanup() {
    [ -f "$WORK/ka.pid" ] && kill "$(cat "$WORK/ka.pid")" 2>/dev/null || true
    sleep 0.5
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip -n "$NS" link add br0 type bridge
ip -n "$NS" link add v0 type veth peer name v1
ip -n "$NS" link set v0 master br0
for l in lo br0 v0 v1; do ip -n "$NS" link set "$l" up; done
ip -n "$NS" addr add 10.99.0.2/24 dev br0
ip -n "$NS" addr add fd00:99::2/64 dev br0 nodad
sleep 2 # the link-local address must be usable before keepalived starts

cat > "$WORK/keepalived.conf" <<'EOC'
global_defs {
    router_id capture
}
vrrp_instance V2 {
    state BACKUP
    interface br0
    virtual_router_id 51
    priority 150
    advert_int 1
    version 2
    authentication {
        auth_type PASS
        auth_pass secret12
    }
    virtual_ipaddress {
        10.99.0.100/24
        10.99.0.101/24
    }
}
vrrp_instance V3 {
    state BACKUP
    interface br0
    virtual_router_id 52
    priority 120
    advert_int 0.5
    version 3
    virtual_ipaddress {
        10.99.0.200/24
    }
}
vrrp_instance V6 {
    state BACKUP
    interface br0
    virtual_router_id 53
    priority 110
    advert_int 1
    version 3
    virtual_ipaddress {
        fd00:99::100/64
        fd00:99::101/64
    }
}
EOC
cp "$WORK/keepalived.conf" "$OUT/keepalived.conf"

ip netns exec "$NS" tcpdump -i br0 -U -w "$WORK/adverts.pcap" 'ip proto 112 or ip6 proto 112' 2>/dev/null &
TD=$!
sleep 1
ip netns exec "$NS" keepalived -n -l -P -f "$WORK/keepalived.conf" \
    -p "$WORK/ka.pid" -r "$WORK/vrrp.pid" >"$WORK/keepalived.log" 2>&1 &
sleep 8
kill "$(cat "$WORK/ka.pid")"
sleep 2
kill "$TD"; wait "$TD" || true
rm -f "$WORK/ka.pid"

# Split by VRID; write the first few MASTER adverts and the priority-0 ones.
python3 - "$WORK/adverts.pcap" "$OUT" <<'EOP'
import struct, sys
pcap, out = sys.argv[1], sys.argv[2]
data = open(pcap, 'rb').read()
assert struct.unpack('<I', data[:4])[0] == 0xa1b2c3d4, 'little-endian pcap expected'
pos, frames = 24, []
while pos + 16 <= len(data):
    _, _, incl, _ = struct.unpack('<IIII', data[pos:pos+16]); pos += 16
    frames.append(data[pos:pos+incl]); pos += incl
names = {51: 'v2-ipv4', 52: 'v3-ipv4', 53: 'v3-ipv6'}
by = {}
for f in frames:
    ethertype = struct.unpack('>H', f[12:14])[0]
    ip = f[14:]
    vrrp = ip[(ip[0] & 0x0f) * 4:] if ethertype == 0x0800 else ip[40:]
    by.setdefault(vrrp[1], []).append(ip)
for vrid, name in names.items():
    pkts = by.get(vrid, [])
    with open(f'{out}/keepalived-{name}.hex', 'w') as f:
        f.write(f'# keepalived 2.2.7 adverts of instance VRID {vrid} (see capture.sh, keepalived.conf)\n')
        f.write('# one IP packet per line, from the IP header on\n')
        kept = 0
        for p in pkts:
            vr = p[(p[0] & 0x0f) * 4:] if p[0] >> 4 == 4 else p[40:]
            if vr[2] != 0 and kept < 3:
                f.write(p.hex() + '\n'); kept += 1
            elif vr[2] == 0:
                f.write(p.hex() + '\n')
EOP
echo "wrote $OUT/keepalived-*.hex"
