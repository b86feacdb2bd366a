//! Announcing VIPs on a new master: gratuitous ARP (IPv4) and unsolicited
//! neighbour advertisements (IPv6), so that neighbours' caches move to our
//! MAC at once. Frames are built with etherparse and sent on an AF_PACKET
//! socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv6Type, PacketBuilder,
    icmpv6::NeighborAdvertisementHeader,
};
use socket2::{Domain, SockAddr, Socket, Type};

const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1 and its Ethernet multicast address 33:33:00:00:00:01.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// NDP option "target link-layer address", in units of 8 bytes.
const OPT_TARGET_LL: u8 = 2;

/// A gratuitous ARP request announcing `vip` at `mac` (RFC 5227's
/// announcement: sender and target address are both the VIP).
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &mac,
        &vip.octets(),
        &[0; 6],
        &vip.octets(),
    )
    .expect("Ethernet and IPv4 address lengths are valid");
    let builder = PacketBuilder::ethernet2(mac, BROADCAST).arp(arp);
    let mut out = Vec::with_capacity(builder.size());
    builder
        .write(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// An unsolicited neighbour advertisement for `vip` (override set, RFC
/// 4861 section 7.2.6) to all nodes, from the VIP itself.
pub fn unsolicited_na_frame(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let na = NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    };
    let builder = PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(vip.octets(), ALL_NODES.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(na));
    let mut payload = vip.octets().to_vec();
    payload.extend_from_slice(&[OPT_TARGET_LL, 1]);
    payload.extend_from_slice(&mac);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut out, &payload)
        .expect("writing to a Vec cannot fail");
    out
}

/// A send-only AF_PACKET socket on one interface.
pub struct Announcer {
    socket: Socket,
    to: SockAddr,
}

impl Announcer {
    pub fn open(ifindex: u32) -> io::Result<Announcer> {
        // Protocol 0: this socket receives nothing.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        Ok(Announcer {
            socket,
            to: link_layer_address(ifindex),
        })
    }

    /// One announcement per VIP.
    pub fn announce(&self, mac: [u8; 6], vips: &[IpAddr]) -> io::Result<()> {
        for vip in vips {
            let frame = match vip {
                IpAddr::V4(a) => garp_frame(mac, *a),
                IpAddr::V6(a) => unsolicited_na_frame(mac, *a),
            };
            self.socket.send_to(&frame, &self.to)?;
        }
        Ok(())
    }
}

/// `sockaddr_ll` for sending whole frames out of `ifindex`.
fn link_layer_address(ifindex: u32) -> SockAddr {
    // SAFETY: socket2 hands us zeroed storage large enough for any address;
    // we fill a sockaddr_ll, which fits in sockaddr_storage, and report its
    // size.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let ll = storage.cast::<libc::sockaddr_ll>();
            (*ll).sll_family = libc::AF_PACKET as u16;
            (*ll).sll_ifindex = ifindex as i32;
            (*ll).sll_halen = 6;
            *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }
    .expect("filling a sockaddr_ll cannot fail");
    addr
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    #[test]
    fn garp_is_a_broadcast_request_for_the_vip_from_our_mac() {
        let frame = garp_frame(MAC, Ipv4Addr::new(10, 0, 0, 100));
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let eth = p.link.unwrap().to_header().unwrap().ethernet2().unwrap();
        assert_eq!((eth.source, eth.destination), (MAC, BROADCAST));
        let Some(NetSlice::Arp(arp)) = p.net else {
            panic!("ARP expected")
        };
        assert_eq!(arp.operation(), ArpOperation::REQUEST);
        assert_eq!(arp.sender_hw_addr(), MAC);
        assert_eq!(arp.sender_protocol_addr(), [10, 0, 0, 100]);
        assert_eq!(arp.target_protocol_addr(), [10, 0, 0, 100]);
    }

    #[test]
    fn unsolicited_na_overrides_and_carries_our_mac() {
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let frame = unsolicited_na_frame(MAC, vip);
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("IPv6 expected")
        };
        assert_eq!(ip.header().hop_limit(), 255);
        assert_eq!(ip.header().destination_addr(), ALL_NODES);
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("ICMPv6 expected")
        };
        let Icmpv6Type::NeighborAdvertisement(na) = icmp.icmp_type() else {
            panic!("NA expected")
        };
        assert!(na.r#override && !na.solicited);
        let payload = icmp.payload();
        assert_eq!(&payload[..16], &vip.octets());
        assert_eq!(&payload[16..18], &[OPT_TARGET_LL, 1]);
        assert_eq!(&payload[18..24], &MAC);
        // The checksum etherparse wrote is valid.
        let header = icmp.header();
        assert_eq!(
            header
                .icmp_type
                .calc_checksum(ip.header().source(), ip.header().destination(), payload)
                .unwrap(),
            header.checksum
        );
    }
}
