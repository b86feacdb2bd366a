//! Readable packet builders for fixtures and benchmarks (etherparse), plus
//! accessors for what the tests check in the frames that come back.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// A TCP or UDP packet to build; defaults: client → VIP, SYN.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    pub ttl: u8,
}

/// TCP flags of a segment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

impl Flags {
    /// Sets these flags on a TCP packet being built (IPv4 or IPv6).
    pub fn apply(
        self,
        mut b: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    ) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
        if self.syn {
            b = b.syn();
        }
        if self.ack {
            b = b.ack(1);
        }
        if self.fin {
            b = b.fin();
        }
        if self.rst {
            b = b.rst();
        }
        if self.psh {
            b = b.psh();
        }
        b
    }
}

pub const SYN: Flags = Flags {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
    psh: false,
};
pub const ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
    psh: false,
};
pub const FIN_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
    psh: false,
};
pub const PSH_ACK: Flags = Flags {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
    psh: true,
};

impl Pkt {
    pub fn to(dst: Ipv4Addr, dport: u16) -> Self {
        Pkt {
            src_mac: CLIENT_MAC,
            dst_mac: DIRECTOR_MAC,
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst,
            sport: 40000,
            dport,
            payload: Vec::new(),
            ttl: 64,
        }
    }

    pub fn from(mut self, src: Ipv4Addr, sport: u16) -> Self {
        self.src = src;
        self.sport = sport;
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    fn base(&self) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        PacketBuilder::ethernet2(self.src_mac, self.dst_mac).ipv4(
            self.src.octets(),
            self.dst.octets(),
            self.ttl,
        )
    }

    pub fn tcp(&self, flags: Flags) -> Vec<u8> {
        let b = self.base().tcp(self.sport, self.dport, 1000, 64240);
        let b = flags.apply(b);
        let mut out = Vec::new();
        b.write(&mut out, &self.payload)
            .expect("building a TCP packet");
        out
    }

    pub fn udp(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.base()
            .udp(self.sport, self.dport)
            .write(&mut out, &self.payload)
            .expect("building a UDP packet");
        out
    }

    pub fn icmp_echo(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.base()
            .icmpv4_echo_request(1, 1)
            .write(&mut out, &self.payload)
            .expect("building ICMP");
        out
    }
}

/// An ARP request for `target` from the client.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[10, 0, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A TCP SYN over IPv6 to `dst`.
pub fn tcp6_syn(dst: [u8; 16], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], dst, 64)
        .tcp(40000, dport, 1, 64240)
        .syn()
        .write(&mut out, &[])
        .expect("building IPv6");
    out
}

/// Inserts IPv4 options (`words` × 4 bytes of NOPs + EOL) into a frame,
/// fixing IHL, total length and the header checksum.
pub fn with_ip_options(frame: &[u8], words: usize) -> Vec<u8> {
    let mut out = frame[..14 + 20].to_vec();
    let mut opts = vec![1u8; words * 4];
    *opts.last_mut().unwrap() = 0;
    out.extend_from_slice(&opts);
    out.extend_from_slice(&frame[14 + 20..]);
    out[14] = 0x40 | (5 + words as u8);
    let tot = u16::from_be_bytes([out[16], out[17]]) + (words * 4) as u16;
    out[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_checksum(&mut out);
    out
}

/// Recomputes the IPv4 header checksum of a frame in place.
/// `frame` (Ethernet, then IPv4 or IPv6) as a router forwards it: TTL or
/// hop limit one lower, the IPv4 header checksum updated.
pub fn hop(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => {
            f[22] -= 1;
            fix_ipv4_checksum(&mut f);
        }
        0x86dd => f[21] -= 1,
        _ => {}
    }
    f
}

pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    frame[24] = 0;
    frame[25] = 0;
    let mut sum: u32 = 0;
    for c in frame[14..14 + ihl].chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    frame[24..26].copy_from_slice(&ck.to_be_bytes());
}

pub fn dst_mac(frame: &[u8]) -> [u8; 6] {
    frame[0..6].try_into().unwrap()
}

pub fn src_mac(frame: &[u8]) -> [u8; 6] {
    frame[6..12].try_into().unwrap()
}

/// An IPv6 TCP or UDP packet to build; client fd00::2 → `dst`.
#[derive(Clone, Debug)]
pub struct Pkt6 {
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

impl Pkt6 {
    pub fn to(dst: std::net::Ipv6Addr, dport: u16) -> Self {
        Pkt6 {
            src: "fd00::2".parse().unwrap(),
            dst,
            sport: 40000,
            dport,
            payload: Vec::new(),
        }
    }

    pub fn from(mut self, src: std::net::Ipv6Addr, sport: u16) -> Self {
        self.src = src;
        self.sport = sport;
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    fn base(&self) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC).ipv6(
            self.src.octets(),
            self.dst.octets(),
            64,
        )
    }

    pub fn tcp(&self, flags: Flags) -> Vec<u8> {
        let b = self.base().tcp(self.sport, self.dport, 1000, 64240);
        let b = flags.apply(b);
        let mut out = Vec::new();
        b.write(&mut out, &self.payload)
            .expect("building an IPv6 TCP packet");
        out
    }

    pub fn udp(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.base()
            .udp(self.sport, self.dport)
            .write(&mut out, &self.payload)
            .expect("building IPv6 UDP");
        out
    }
}

/// Inserts an IPv6 extension header (8 bytes, next header kept) of type
/// `kind` (0 hop-by-hop, 60 destination options, 44 fragment with
/// `frag_offset` in 8-byte units) right after the fixed header.
pub fn with_ipv6_ext(frame: &[u8], kind: u8, frag_offset: u16) -> Vec<u8> {
    let mut out = frame[..14 + 40].to_vec();
    let next = out[14 + 6];
    out[14 + 6] = kind;
    let mut ext = [0u8; 8];
    ext[0] = next;
    if kind == 44 {
        ext[2..4].copy_from_slice(&(frag_offset << 3).to_be_bytes());
    } else {
        // Pad1/PadN options filling the 6 remaining bytes.
        ext[2] = 1;
        ext[3] = 4;
    }
    out.extend_from_slice(&ext);
    out.extend_from_slice(&frame[14 + 40..]);
    let plen = u16::from_be_bytes([out[18], out[19]]) + 8;
    out[18..20].copy_from_slice(&plen.to_be_bytes());
    out
}

/// Checks an Ethernet/IP/TCP-or-UDP frame's checksums by recomputing them
/// from scratch: the IPv4 header checksum, and the TCP/UDP checksum over
/// the pseudo-header. IPv4 UDP with checksum 0 (none) is accepted.
pub fn assert_checksums_valid(frame: &[u8]) {
    use lb_common::csum::checksum;
    let v6 = frame[12..14] == [0x86, 0xdd];
    let (l4_off, proto, pseudo) = if v6 {
        let plen = u16::from_be_bytes([frame[18], frame[19]]) as usize;
        let mut p = frame[22..54].to_vec();
        p.extend_from_slice(&(plen as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, frame[20]]);
        (54, frame[20], p)
    } else {
        let ihl = (frame[14] & 0x0f) as usize * 4;
        assert_eq!(checksum(&frame[14..14 + ihl]), 0, "IPv4 header checksum");
        let tot = u16::from_be_bytes([frame[16], frame[17]]) as usize;
        let mut p = frame[26..34].to_vec();
        p.extend_from_slice(&[0, frame[23]]);
        p.extend_from_slice(&((tot - ihl) as u16).to_be_bytes());
        (14 + ihl, frame[23], p)
    };
    let end = if v6 {
        54 + u16::from_be_bytes([frame[18], frame[19]]) as usize
    } else {
        14 + u16::from_be_bytes([frame[16], frame[17]]) as usize
    };
    let seg = &frame[l4_off..end];
    if proto == 17 && !v6 && seg[6..8] == [0, 0] {
        return;
    }
    let mut all = pseudo;
    all.extend_from_slice(seg);
    assert_eq!(checksum(&all), 0, "L4 checksum (protocol {proto})");
}
