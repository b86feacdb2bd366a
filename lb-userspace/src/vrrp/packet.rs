//! The VRRP advertisement on the wire: VRRPv2 (RFC 3768, with its simple
//! password) and VRRPv3 (RFC 5798 / RFC 9568) for IPv4 and IPv6.
//!
//! Decoding never fails hard: every problem is a [`Reject`] reason that the
//! caller counts. Checks that need no configuration (length, version, type,
//! TTL, checksum) are in [`decode`]; checks against an instance's settings
//! (VRID, version, address count, password, v2 interval) are in
//! [`Expect::check`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// Where adverts go unless unicast peers are configured.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Adverts are sent with, and only accepted with, this TTL / hop limit:
/// proof that they come from the local link.
pub const REQUIRED_TTL: u8 = 255;

const TYPE_ADVERTISEMENT: u8 = 1;
const AUTH_NONE: u8 = 0;
const AUTH_PASS: u8 = 1;
const V2_AUTH_LEN: usize = 8;
const HEADER_LEN: usize = 8;

/// Why a received packet was not accepted; counted per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    /// Shorter than its header, its addresses or (v2) its password.
    TooShort,
    /// TTL / hop limit not 255: not sent from this link.
    BadTtl,
    /// Neither 2 nor 3, or not the instance's version.
    BadVersion,
    /// Not an advertisement (the only VRRP type).
    BadType,
    BadChecksum,
    /// No instance on this interface has this virtual router id.
    UnknownVrid,
    /// The address count differs from the instance's virtual_ipaddresses.
    AddressCount,
    /// v2: wrong authentication type or password.
    BadAuth,
    /// v2: the advert interval differs from ours (RFC 3768 5.3.5).
    IntervalMismatch,
    /// Addresses of the other family, or an IP header we cannot read.
    BadAddress,
}

impl Reject {
    pub const ALL: [Reject; 10] = [
        Reject::TooShort,
        Reject::BadTtl,
        Reject::BadVersion,
        Reject::BadType,
        Reject::BadChecksum,
        Reject::UnknownVrid,
        Reject::AddressCount,
        Reject::BadAuth,
        Reject::IntervalMismatch,
        Reject::BadAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TooShort => "too_short",
            Reject::BadTtl => "bad_ttl",
            Reject::BadVersion => "bad_version",
            Reject::BadType => "bad_type",
            Reject::BadChecksum => "bad_checksum",
            Reject::UnknownVrid => "unknown_vrid",
            Reject::AddressCount => "address_count",
            Reject::BadAuth => "bad_auth",
            Reject::IntervalMismatch => "interval_mismatch",
            Reject::BadAddress => "bad_address",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a VRRPv3-over-IPv4 checksum is computed. RFC 5798 says with the
/// pseudo-header; keepalived and FRR do so, some vendors do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V3Ipv4Checksum {
    /// keepalived's and FRR's choice, the default.
    WithPseudoHeader,
    WithoutPseudoHeader,
}

/// One advertisement, decoded or to be sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Advert {
    /// 2 or 3.
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    /// In centiseconds (v2 carries whole seconds: multiples of 100).
    pub interval_cs: u16,
    pub addresses: Vec<IpAddr>,
    /// v2 simple password, zero-padded; None: no authentication.
    pub password: Option<[u8; V2_AUTH_LEN]>,
}

// Hand-written so that a password never reaches a log.
impl fmt::Debug for Advert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Advert")
            .field("version", &self.version)
            .field("vrid", &self.vrid)
            .field("priority", &self.priority)
            .field("interval_cs", &self.interval_cs)
            .field("addresses", &self.addresses)
            .field("password", &self.password.map(|_| "<hidden>"))
            .finish()
    }
}

/// Pads a configured password to the 8 bytes of the v2 field.
pub fn pad_password(password: &str) -> [u8; V2_AUTH_LEN] {
    let mut out = [0u8; V2_AUTH_LEN];
    let bytes = password.as_bytes();
    let n = bytes.len().min(V2_AUTH_LEN);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// What a packet's IP header said: who sent it, to where, with what TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpMeta {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
}

/// Splits a whole IPv4 packet (as a raw IPv4 socket returns it) into its
/// header facts and the VRRP message.
pub fn split_ipv4(packet: &[u8]) -> Result<(IpMeta, &[u8]), Reject> {
    let ip = etherparse::Ipv4HeaderSlice::from_slice(packet).map_err(|_| Reject::TooShort)?;
    if ip.protocol() != etherparse::IpNumber(IPPROTO_VRRP) {
        return Err(Reject::BadAddress);
    }
    let start = ip.slice().len();
    let end = usize::from(ip.total_len()).min(packet.len());
    if end < start {
        return Err(Reject::TooShort);
    }
    let meta = IpMeta {
        src: IpAddr::V4(ip.source_addr()),
        dst: IpAddr::V4(ip.destination_addr()),
        ttl: ip.ttl(),
    };
    Ok((meta, &packet[start..end]))
}

/// Decodes a VRRP message with the facts of the IP header that carried it.
pub fn decode(meta: &IpMeta, msg: &[u8]) -> Result<Advert, Reject> {
    if msg.len() < HEADER_LEN {
        return Err(Reject::TooShort);
    }
    let version = msg[0] >> 4;
    if version != 2 && version != 3 {
        return Err(Reject::BadVersion);
    }
    if msg[0] & 0x0f != TYPE_ADVERTISEMENT {
        return Err(Reject::BadType);
    }
    if meta.ttl != REQUIRED_TTL {
        return Err(Reject::BadTtl);
    }
    let v6 = meta.src.is_ipv6();
    if v6 != meta.dst.is_ipv6() || (version == 2 && v6) {
        return Err(Reject::BadAddress);
    }
    let count = usize::from(msg[3]);
    let addr_len = if v6 { 16 } else { 4 };
    let auth_len = if version == 2 { V2_AUTH_LEN } else { 0 };
    let len = HEADER_LEN + count * addr_len + auth_len;
    if msg.len() < len {
        return Err(Reject::TooShort);
    }
    // Trailing bytes (padding) are outside the message and its checksum.
    let msg = &msg[..len];
    if !checksum_ok(meta, version, msg) {
        return Err(Reject::BadChecksum);
    }
    let addresses = msg[HEADER_LEN..HEADER_LEN + count * addr_len]
        .chunks_exact(addr_len)
        .map(|a| match a.len() {
            4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).unwrap_or([0; 16]))),
        })
        .collect();
    let (interval_cs, password) = if version == 2 {
        let password = match msg[4] {
            AUTH_NONE => None,
            AUTH_PASS => {
                let mut p = [0u8; V2_AUTH_LEN];
                p.copy_from_slice(&msg[len - V2_AUTH_LEN..]);
                Some(p)
            }
            _ => return Err(Reject::BadAuth),
        };
        (u16::from(msg[5]) * 100, password)
    } else {
        (u16::from_be_bytes([msg[4], msg[5]]) & 0x0fff, None)
    };
    Ok(Advert {
        version,
        vrid: msg[1],
        priority: msg[2],
        interval_cs,
        addresses,
        password,
    })
}

/// v2 and v3-over-IPv6 have one valid checksum; v3 over IPv4 is accepted
/// with or without the pseudo-header (see [`V3Ipv4Checksum`]).
fn checksum_ok(meta: &IpMeta, version: u8, msg: &[u8]) -> bool {
    match (version, meta.src) {
        (2, _) => fold(sum(0, msg)) == 0,
        (_, IpAddr::V6(_)) => fold(sum(pseudo_sum(meta, msg.len()), msg)) == 0,
        _ => fold(sum(0, msg)) == 0 || fold(sum(pseudo_sum(meta, msg.len()), msg)) == 0,
    }
}

/// Encodes `advert` sent from `src` to `dst`. `v3_ipv4` picks the checksum
/// of v3 over IPv4 and is ignored otherwise.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr, v3_ipv4: V3Ipv4Checksum) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER_LEN + advert.addresses.len() * 16 + V2_AUTH_LEN);
    msg.push((advert.version << 4) | TYPE_ADVERTISEMENT);
    msg.push(advert.vrid);
    msg.push(advert.priority);
    msg.push(u8::try_from(advert.addresses.len()).unwrap_or(u8::MAX));
    if advert.version == 2 {
        msg.push(if advert.password.is_some() {
            AUTH_PASS
        } else {
            AUTH_NONE
        });
        msg.push(u8::try_from(advert.interval_cs / 100).unwrap_or(u8::MAX));
    } else {
        msg.extend_from_slice(&(advert.interval_cs & 0x0fff).to_be_bytes());
    }
    msg.extend_from_slice(&[0, 0]);
    for a in advert.addresses.iter().take(usize::from(u8::MAX)) {
        match a {
            IpAddr::V4(a) => msg.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => msg.extend_from_slice(&a.octets()),
        }
    }
    if advert.version == 2 {
        msg.extend_from_slice(&advert.password.unwrap_or([0; V2_AUTH_LEN]));
    }
    let meta = IpMeta {
        src,
        dst,
        ttl: REQUIRED_TTL,
    };
    let pseudo =
        advert.version == 3 && (src.is_ipv6() || v3_ipv4 == V3Ipv4Checksum::WithPseudoHeader);
    let initial = if pseudo {
        pseudo_sum(&meta, msg.len())
    } else {
        0
    };
    let csum = fold(sum(initial, &msg));
    msg[6..8].copy_from_slice(&csum.to_be_bytes());
    msg
}

/// The Internet checksum's running sum (RFC 1071) over big-endian words.
fn sum(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds the carries in and complements: the checksum field's value, or
/// 0 when verifying a message whose checksum is right.
fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The sum of the IPv4 or IPv6 pseudo-header for protocol 112.
fn pseudo_sum(meta: &IpMeta, len: usize) -> u32 {
    let mut acc = 0;
    match (meta.src, meta.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum(acc, &s.octets());
            acc = sum(acc, &d.octets());
            acc = sum(acc, &[0, IPPROTO_VRRP]);
            acc = sum(acc, &(len as u16).to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            acc = sum(acc, &v6(s));
            acc = sum(acc, &v6(d));
            acc = sum(acc, &(len as u32).to_be_bytes());
            acc = sum(acc, &[0, 0, 0, IPPROTO_VRRP]);
        }
    }
    acc
}

/// What an instance accepts: its own settings.
#[derive(Clone, Debug)]
pub struct Expect {
    pub version: u8,
    pub vrid: u8,
    pub address_count: usize,
    /// v2 only.
    pub password: Option<[u8; V2_AUTH_LEN]>,
    /// v2 only: the configured interval in centiseconds.
    pub interval_cs: u16,
}

impl Expect {
    /// The checks of RFC 3768 / RFC 5798 section 7.1 that depend on the
    /// instance. An advert with priority 0 is still checked: a forged
    /// "I resign" must not move mastership either.
    pub fn check(&self, advert: &Advert) -> Result<(), Reject> {
        if advert.vrid != self.vrid {
            return Err(Reject::UnknownVrid);
        }
        if advert.version != self.version {
            return Err(Reject::BadVersion);
        }
        if self.version == 2 {
            if advert.password != self.password {
                return Err(Reject::BadAuth);
            }
            if advert.interval_cs != self.interval_cs {
                return Err(Reject::IntervalMismatch);
            }
        }
        if advert.addresses.len() != self.address_count {
            return Err(Reject::AddressCount);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IP packets of one golden file (see testdata/vrrp/capture.sh).
    fn golden(name: &str) -> Vec<Vec<u8>> {
        let path = format!(
            "{}/testdata/vrrp/keepalived-{name}.hex",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                (0..l.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                    .collect()
            })
            .collect()
    }

    /// IPv6 packets: meta from the fixed header, then the VRRP message.
    fn split_ipv6(p: &[u8]) -> (IpMeta, &[u8]) {
        let ip = etherparse::Ipv6HeaderSlice::from_slice(p).unwrap();
        let meta = IpMeta {
            src: IpAddr::V6(ip.source_addr()),
            dst: IpAddr::V6(ip.destination_addr()),
            ttl: ip.hop_limit(),
        };
        (meta, &p[40..40 + usize::from(ip.payload_length())])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn golden_v2_ipv4_from_keepalived_decodes_and_reencodes_byte_for_byte() {
        let packets = golden("v2-ipv4");
        assert!(packets.len() >= 2);
        for p in &packets {
            let (meta, msg) = split_ipv4(p).unwrap();
            let a = decode(&meta, msg).unwrap();
            assert_eq!(a.version, 2);
            assert_eq!(a.vrid, 51);
            assert!(a.priority == 150 || a.priority == 0, "{a:?}");
            assert_eq!(a.interval_cs, 100);
            assert_eq!(a.addresses, vec![ip("10.99.0.100"), ip("10.99.0.101")]);
            assert_eq!(a.password, Some(pad_password("secret12")));
            let again = encode(&a, meta.src, meta.dst, V3Ipv4Checksum::WithPseudoHeader);
            assert_eq!(again, msg, "re-encoding differs from keepalived's bytes");
        }
        // The last advert is the priority 0 keepalived sends when it stops.
        let (meta, msg) = split_ipv4(packets.last().unwrap()).unwrap();
        assert_eq!(decode(&meta, msg).unwrap().priority, 0);
    }

    #[test]
    fn golden_v3_ipv4_from_keepalived_uses_the_pseudo_header() {
        let packets = golden("v3-ipv4");
        for p in &packets {
            let (meta, msg) = split_ipv4(p).unwrap();
            let a = decode(&meta, msg).unwrap();
            assert_eq!((a.version, a.vrid), (3, 52));
            assert_eq!(a.interval_cs, 50);
            assert_eq!(a.addresses, vec![ip("10.99.0.200")]);
            assert_eq!(a.password, None);
            // keepalived's default is the pseudo-header: ours matches it.
            let with = encode(&a, meta.src, meta.dst, V3Ipv4Checksum::WithPseudoHeader);
            assert_eq!(with, msg);
            let without = encode(&a, meta.src, meta.dst, V3Ipv4Checksum::WithoutPseudoHeader);
            assert_ne!(without, msg);
            // ...and the other variant is accepted on receive too.
            assert_eq!(decode(&meta, &without).unwrap(), a);
        }
    }

    #[test]
    fn golden_v3_ipv6_from_keepalived_decodes_and_reencodes() {
        let packets = golden("v3-ipv6");
        for p in &packets {
            let (meta, msg) = split_ipv6(p);
            assert_eq!(meta.dst, IpAddr::V6(MULTICAST_V6));
            let a = decode(&meta, msg).unwrap();
            assert_eq!((a.version, a.vrid), (3, 53));
            assert_eq!(a.interval_cs, 100);
            assert_eq!(a.addresses, vec![ip("fd00:99::100"), ip("fd00:99::101")],);
            assert!(a.priority == 110 || a.priority == 0);
            assert_eq!(
                encode(&a, meta.src, meta.dst, V3Ipv4Checksum::WithoutPseudoHeader),
                msg
            );
        }
    }

    fn sample(version: u8) -> (IpMeta, Advert) {
        let meta = IpMeta {
            src: ip("10.0.0.1"),
            dst: IpAddr::V4(MULTICAST_V4),
            ttl: 255,
        };
        let advert = Advert {
            version,
            vrid: 7,
            priority: 100,
            interval_cs: 100,
            addresses: vec![ip("10.0.0.100")],
            password: (version == 2).then(|| pad_password("pw")),
        };
        (meta, advert)
    }

    #[test]
    fn round_trips_every_version_and_family() {
        for version in [2, 3] {
            let (meta, a) = sample(version);
            let bytes = encode(&a, meta.src, meta.dst, V3Ipv4Checksum::WithPseudoHeader);
            assert_eq!(decode(&meta, &bytes).unwrap(), a);
        }
        let meta = IpMeta {
            src: ip("fe80::1"),
            dst: IpAddr::V6(MULTICAST_V6),
            ttl: 255,
        };
        let a = Advert {
            version: 3,
            vrid: 255,
            priority: 255,
            interval_cs: 4095,
            addresses: vec![ip("2001:db8::1"), ip("2001:db8::2")],
            password: None,
        };
        let bytes = encode(&a, meta.src, meta.dst, V3Ipv4Checksum::WithPseudoHeader);
        assert_eq!(decode(&meta, &bytes).unwrap(), a);
    }

    #[test]
    fn malformed_packets_are_rejected_with_their_reason() {
        let (meta, a) = sample(2);
        let good = encode(&a, meta.src, meta.dst, V3Ipv4Checksum::WithPseudoHeader);

        assert_eq!(decode(&meta, &good[..5]), Err(Reject::TooShort));
        assert_eq!(
            decode(&meta, &good[..good.len() - 1]),
            Err(Reject::TooShort)
        );
        let bad_ttl = IpMeta { ttl: 254, ..meta };
        assert_eq!(decode(&bad_ttl, &good), Err(Reject::BadTtl));
        let mut bad = good.clone();
        bad[0] = 0x41;
        assert_eq!(decode(&meta, &bad), Err(Reject::BadVersion));
        let mut bad = good.clone();
        bad[0] = 0x22;
        assert_eq!(decode(&meta, &bad), Err(Reject::BadType));
        let mut bad = good.clone();
        bad[2] ^= 1;
        assert_eq!(decode(&meta, &bad), Err(Reject::BadChecksum));
        let v6_meta = IpMeta {
            src: ip("fe80::1"),
            dst: IpAddr::V6(MULTICAST_V6),
            ttl: 255,
        };
        assert_eq!(decode(&v6_meta, &good), Err(Reject::BadAddress));

        // A wrong v3 IPv4 checksum fails both variants.
        let (meta3, a3) = sample(3);
        let mut bad = encode(&a3, meta3.src, meta3.dst, V3Ipv4Checksum::WithPseudoHeader);
        bad[7] ^= 0x10;
        assert_eq!(decode(&meta3, &bad), Err(Reject::BadChecksum));
    }

    #[test]
    fn instance_checks_name_the_mismatch() {
        let (_, a) = sample(2);
        let expect = Expect {
            version: 2,
            vrid: 7,
            address_count: 1,
            password: Some(pad_password("pw")),
            interval_cs: 100,
        };
        assert_eq!(expect.check(&a), Ok(()));
        let wrong = |f: &dyn Fn(&mut Advert)| {
            let mut b = a.clone();
            f(&mut b);
            expect.check(&b)
        };
        assert_eq!(wrong(&|b| b.vrid = 8), Err(Reject::UnknownVrid));
        assert_eq!(wrong(&|b| b.version = 3), Err(Reject::BadVersion));
        assert_eq!(
            wrong(&|b| b.password = Some(pad_password("nope"))),
            Err(Reject::BadAuth)
        );
        assert_eq!(wrong(&|b| b.password = None), Err(Reject::BadAuth));
        assert_eq!(
            wrong(&|b| b.interval_cs = 200),
            Err(Reject::IntervalMismatch)
        );
        assert_eq!(
            wrong(&|b| b.addresses.push(ip("10.0.0.101"))),
            Err(Reject::AddressCount)
        );
    }

    #[test]
    fn debug_output_hides_the_password() {
        let (_, a) = sample(2);
        let text = format!("{a:?}");
        assert!(!text.contains("pw"), "{text}");
        assert!(text.contains("<hidden>"));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes() {
        let (meta, _) = sample(2);
        let mut x: u32 = 12345;
        for len in 0..64 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let _ = decode(&meta, &bytes);
                let _ = split_ipv4(&bytes);
            }
        }
    }
}
