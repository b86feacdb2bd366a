//! The raw IP protocol-112 socket of one instance: bound to its interface,
//! member of 224.0.0.18 / ff02::12 there (unless unicast), sending whole IP
//! packets (header included) so that source, TTL / hop limit 255 and DSCP
//! are exactly keepalived's.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd as _;

use etherparse::{IpDscp, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{
    IPPROTO_VRRP, IpMeta, MULTICAST_V4, MULTICAST_V6, REQUIRED_TTL, Reject, split_ipv4,
};

/// DSCP CS6 (network control), as keepalived sends.
const DSCP_NETWORK_CONTROL: u8 = 48;
const MAX_PACKET: usize = 2048;

pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    v6: bool,
    ifindex: u32,
}

/// One packet read from the socket: the VRRP message with what its IP
/// header said, or why the IP layer already made it unusable.
pub type Received = Result<(IpMeta, Vec<u8>), Reject>;

impl VrrpSocket {
    pub fn open(ifname: &str, ifindex: u32, v6: bool, multicast: bool) -> io::Result<VrrpSocket> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(
            domain,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        socket.set_nonblocking(true)?;
        if v6 {
            socket.set_header_included_v6(true)?;
            socket.set_multicast_loop_v6(false)?;
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
            if multicast {
                socket.join_multicast_v6(&MULTICAST_V6, ifindex)?;
            }
        } else {
            socket.set_header_included_v4(true)?;
            socket.set_multicast_loop_v4(false)?;
            if multicast {
                socket.join_multicast_v4_n(
                    &MULTICAST_V4,
                    &socket2::InterfaceIndexOrAddress::Index(ifindex),
                )?;
            }
        }
        Ok(VrrpSocket {
            // SAFETY: the AsyncFd owns the socket: its descriptor stays
            // open, and is not reused, for as long as it is registered.
            fd: unsafe { AsyncFd::register(socket) }?,
            v6,
            ifindex,
        })
    }

    /// Sends `msg` (an encoded advert) from `src` to `dst` in an IP packet
    /// with TTL / hop limit 255.
    pub fn send(&self, src: IpAddr, dst: IpAddr, msg: &[u8]) -> io::Result<()> {
        let mut packet = Vec::with_capacity(60 + msg.len());
        let to: SockAddr = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(
                    msg.len() as u16,
                    REQUIRED_TTL,
                    IpNumber(IPPROTO_VRRP),
                    s.octets(),
                    d.octets(),
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                h.dscp = IpDscp::try_new(DSCP_NETWORK_CONTROL).unwrap_or(IpDscp::ZERO);
                h.header_checksum = h.calc_header_checksum();
                h.write(&mut packet)?;
                SocketAddr::new(dst, 0).into()
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = Ipv6Header {
                    traffic_class: DSCP_NETWORK_CONTROL << 2,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: msg.len() as u16,
                    next_header: IpNumber(IPPROTO_VRRP),
                    hop_limit: REQUIRED_TTL,
                    source: s.octets(),
                    destination: d.octets(),
                };
                h.write(&mut packet)?;
                // Link-local and multicast destinations need the interface.
                SocketAddr::V6(SocketAddrV6::new(d, 0, 0, self.ifindex)).into()
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "source and destination of different families",
                ));
            }
        };
        packet.extend_from_slice(msg);
        self.fd.get_ref().send_to(&packet, &to)?;
        Ok(())
    }

    /// Waits for the next packet.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                if self.v6 {
                    recv_v6(fd.get_ref())
                } else {
                    recv_v4(fd.get_ref())
                }
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_v4(socket: &Socket) -> io::Result<Received> {
    let mut buf = [0u8; MAX_PACKET];
    let n = nix::sys::socket::recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(io::Error::from)?;
    Ok(split_ipv4(&buf[..n]).map(|(meta, msg)| (meta, msg.to_vec())))
}

/// IPv6 raw sockets return the payload only: the hop limit and the
/// destination come as control messages.
fn recv_v6(socket: &Socket) -> io::Result<Received> {
    let mut buf = [0u8; MAX_PACKET];
    let mut cmsg = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let n = msg.bytes;
    let src = msg.address.map(|a| a.ip());
    let mut ttl = None;
    let mut dst = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv6HopLimit(h) => ttl = u8::try_from(h).ok(),
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(ttl)) = (src, dst, ttl) else {
        return Ok(Err(Reject::BadAddress));
    };
    let meta = IpMeta {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        ttl,
    };
    Ok(Ok((meta, buf[..n].to_vec())))
}
